"""core.rewrite: key statistics, context direction, search, copy/paste, the update (closed form,
Λ-Adam, the original method), erase, the stats CLI and the rewrite evaluation. Tiny seeded models."""
from __future__ import annotations

import argparse

import pytest
import torch

from conftest import make_progan, make_stylegan2
from core import rewrite as rw
from core.rewrite.keys import _key_state
from core.rewrite.solvers import _problem
from core.edits import EditStack, WeightEdit

torch.manual_seed(0)


def assert_close(a, b, atol=1e-5, rtol=1.3e-6):
    """torch.allclose with a useful message (torch.testing.assert_close imports torch.distributed,
    seconds on a loaded machine)."""
    a = torch.as_tensor(a).detach()
    b = torch.as_tensor(b).detach().to(a.dtype)
    assert a.shape == b.shape, f"shapes {tuple(a.shape)} != {tuple(b.shape)}"
    err = float((a - b).abs().max()) if a.numel() else 0.0
    assert torch.allclose(a, b, atol=atol, rtol=rtol), f"max abs diff {err:g}"


def box_mask(size, t, l, b, r):
    m = torch.zeros(size, size)
    m[t:b, l:r] = 1
    return m


def brute_keys(g, layer, numbers):
    state = g.start(g.sample_z(numbers))
    keys = {layer: None}
    g.run(state, stop=layer, keys=keys)
    return keys[layer]


# ------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("family,layer", [("progan", "layer3"), ("progan", "layer1"),
                                          ("stylegan2", "layer5"), ("stylegan2", "layer4")])
def test_stats_equal_brute_force(family, layer):
    g = make_progan() if family == "progan" else make_stylegan2()
    numbers = [0, 3, 5, 7, 11]
    calls = []
    st = rw.collect_key_stats(g, layer, numbers, batch_size=2,
                              progress=lambda d, t, l: calls.append((d, t)))
    k = brute_keys(g, layer, numbers).double()
    k = k.permute(0, 2, 3, 1).reshape(-1, k.shape[1])
    assert st.count == k.shape[0]
    assert st.mom2.dtype == torch.float64
    assert_close(st.mom2, k.T @ k / k.shape[0], rtol=1e-5, atol=1e-8)
    assert calls[-1] == (5, 5) and len(calls) == 3
    assert st.meta["layer"] == layer and st.meta["samples"] == "5"


def test_stats_stop_returns_partial():
    g = make_progan()
    n = iter(range(100))
    st = rw.collect_key_stats(g, "layer2", range(10), batch_size=2, stop=lambda: next(n) >= 2)
    assert st.meta["samples"] == "4"
    with pytest.raises(ValueError, match="stopped"):
        rw.collect_key_stats(g, "layer2", range(10), stop=lambda: True)


def test_stats_file_cache_and_errors(progan_bundle):
    import core
    model = core.load_model(progan_bundle)
    with pytest.raises(rw.MissingStatsError, match="python -m core stats"):
        rw.get_stats(model, "layer3")
    with pytest.raises(ValueError, match="bundle"):
        rw.get_stats(make_progan(), "layer3")
    st = rw.collect_key_stats(model, "layer3", range(4))
    path = rw.stats_path(model, "layer3")
    # another module's tensors in the same file survive
    from safetensors.torch import save_file
    path.parent.mkdir(parents=True)
    save_file({"quantiles": torch.arange(5.0)}, str(path), metadata={"other": "x"})
    rw.save_key_stats(st, path)
    loaded = rw.get_stats(model, "layer3")
    assert_close(loaded.mom2, st.mom2)
    assert loaded.count == st.count and loaded.meta["other"] == "x"
    from safetensors.torch import load_file
    assert "quantiles" in load_file(str(path))
    with pytest.raises(ValueError, match="layer2"):
        rw.load_key_stats(path, layer="layer2")
    with pytest.raises(ValueError, match="key channels"):
        rw.load_key_stats(path, channels=5)
    bad = path.parent / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable"):
        rw.load_key_stats(bad)


def test_cli_stats(progan_bundle, tmp_path, capsys):
    from core import __main__ as cli
    assert cli.main(["stats", str(progan_bundle), "--layer", "all", "--samples", "3"]) == 0
    import core
    model = core.load_model(progan_bundle)
    for layer in model.layers:
        assert rw.get_stats(model, layer).meta["samples"] == "3"
    assert cli.main(["stats", str(progan_bundle), "--layer", "layer4", "--samples", "2",
                     "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "layer4.safetensors").is_file()
    assert cli.main(["stats", str(progan_bundle), "--layer", "nope"]) == 2
    assert "unknown layer" in capsys.readouterr().err


# ------------------------------------------------------------------------------- direction
def test_direction_single_key_is_Cinv_k():
    g = make_progan()
    st = rw.collect_key_stats(g, "layer3", range(8))
    m = torch.zeros(8, 8)                     # at the key resolution: exactly one key pixel
    m[3, 5] = 1
    D = rw.context_direction(g, "layer3", [(2, m)], st)
    k = brute_keys(g, "layer3", [2])[0, :, 3, 5].double()
    want = torch.linalg.solve(st.mom2, k)
    want = want / want.norm()
    assert D.shape == (1, 8)
    assert_close(D[0].double(), want, atol=1e-5, rtol=0)   # sign aligned too
    # the Match-Sel query for that pixel is the same direction
    q = rw.query_direction(g, "layer3", 2, m, st)
    assert_close(q.double(), want, atol=1e-5, rtol=0)


def test_direction_rank_and_errors():
    g = make_progan()
    st = rw.collect_key_stats(g, "layer3", range(8))
    m = box_mask(16, 2, 2, 10, 12)
    D = rw.context_direction(g, "layer3", [(0, m), (1, m)], st, rank=3)
    assert_close(D @ D.T, torch.eye(3), atol=1e-5, rtol=0)
    # the top direction is the largest whitened singular direction: the rank-1 answer
    D1 = rw.context_direction(g, "layer3", [(0, m), (1, m)], st, rank=1)
    assert abs(float(D1[0] @ D[0])) > 0.999
    with pytest.raises(ValueError, match="empty context"):
        rw.context_direction(g, "layer3", [], st)
    with pytest.raises(ValueError, match="empty context"):
        rw.context_direction(g, "layer3", [(0, torch.zeros(16, 16))], st)
    one = torch.zeros(8, 8)
    one[1, 1] = 1
    with pytest.raises(ValueError, match="number of context pixels"):
        rw.context_direction(g, "layer3", [(0, one)], st, rank=2)
    with pytest.raises(ValueError, match="key channels"):
        rw.context_direction(g, "layer3", [(0, m)], st, rank=9)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        rw.context_direction(g, "layer3", [(0, m * 2)], st)
    with pytest.raises(ValueError, match="non-negative"):
        rw.context_direction(g, "layer3", [(-1, m)], st)


def test_mask_resize_matches_pil_bilinear():
    """Masks are resized like the original resizes its PNGs (PIL bilinear): fringe included."""
    import numpy as np
    from PIL import Image
    m = box_mask(16, 4, 4, 8, 8)              # an aligned 4x4 block -> 2x2 cells plus fringe
    r = rw.resize_mask(m, (8, 8))
    assert rw.bounding_box(r) == (1, 1, 5, 5)
    assert float(r.sum()) == pytest.approx(4.0, abs=1e-5)
    rnd = (torch.rand(64, 64, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    for size in (8, 16, 24, 96):
        pil = Image.fromarray((rnd.numpy() * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
        want = torch.from_numpy(np.asarray(pil).astype(np.float32) / 255)
        assert float((rw.resize_mask(rnd, (size, size)) - want).abs().max()) < 3 / 255
    assert rw.bounding_box(torch.zeros(3, 3)) is None
    assert rw.resize_mask(torch.ones(4, 4, dtype=torch.bool), (4, 4)).dtype == torch.float32


# ------------------------------------------------------------------------------- search
def test_search_ranks_by_max_dot():
    g = make_progan()
    st = rw.collect_key_stats(g, "layer4", range(6))
    D = rw.context_direction(g, "layer4", [(0, box_mask(16, 0, 0, 8, 8))], st)
    numbers = list(range(12))
    res = rw.search(g, "layer4", D, numbers, batch_size=5, quantile=0.9)
    k = brute_keys(g, "layer4", numbers)
    heat = torch.einsum("nihw,i->nhw", k, D[0])
    best = heat.flatten(1).max(1).values
    assert res.ranking == [numbers[i] for i in torch.argsort(best, descending=True).tolist()]
    assert_close(res.heatmaps[3], heat[3])
    frac = sum(int(res.highlight(i).sum()) for i in numbers) / heat.numel()
    assert 0.05 < frac <= 0.11
    assert res.highlight(0, size=16).shape == (16, 16)


# ------------------------------------------------------------------------------- copy / paste
def test_copy_paste_geometry_and_errors():
    g = make_progan()
    v = rw.layer_values(g, "layer3", [2, 3])
    m = box_mask(8, 2, 3, 5, 7)                # at the value grid (8x8)
    clip = rw.copy_value(g, "layer3", 2, m)
    assert clip.box == (2, 3, 5, 7) and clip.grid == (8, 8)
    assert_close(clip.value, v[0, :, 2:5, 3:7])
    # centre of the paste mask's box, in image pixels; round trip to the grid
    x, y = rw.paste_center(g, "layer3", box_mask(8, 0, 4, 2, 6))
    assert (int(x * 8 / 16), int(y * 8 / 16)) == (5, 1)
    target, region = rw.paste_target(g, "layer3", 3, clip, (x, y))
    # clip 3x4 centred at (1, 5) -> clamped to the top: rows 0..3, cols 3..7
    assert region.nonzero().min(0).values.tolist() == [0, 3]
    assert region.nonzero().max(0).values.tolist() == [2, 6]
    assert_close(target[:, 0:3, 3:7], clip.value)
    assert_close(target[:, ~region], v[1][:, ~region])
    # bottom-right corner clamps inside the map
    _, reg2 = rw.paste_target(g, "layer3", 3, clip, (15.9, 15.9))
    assert reg2[7, 7] and reg2.sum() == 12
    # fractional alpha blends
    soft = rw.copy_value(g, "layer3", 2, m * 0.5)
    t3, _ = rw.paste_target(g, "layer3", 3, soft, (x, y))
    assert_close(t3[:, 0:3, 3:7], 0.5 * clip.value + 0.5 * v[1][:, 0:3, 3:7])
    with pytest.raises(ValueError, match="outside"):
        rw.paste_target(g, "layer3", 3, clip, (16, 3))
    with pytest.raises(ValueError, match="outside"):
        rw.paste_target(g, "layer3", 3, clip, (-1, 3))
    with pytest.raises(ValueError, match="empty copy mask"):
        rw.copy_value(g, "layer3", 2, torch.zeros(16, 16))
    with pytest.raises(ValueError, match="empty paste mask"):
        rw.paste_center(g, "layer3", torch.zeros(16, 16))
    with pytest.raises(ValueError, match="copied from layer3"):
        rw.paste_target(g, "layer4", 3, clip, (x, y))


@pytest.mark.parametrize("family,layer", [("progan", "layer3"), ("stylegan2", "layer5")])
def test_render_with_value_is_identity_for_unchanged_value(family, layer):
    g = make_progan() if family == "progan" else make_stylegan2()
    v = rw.layer_values(g, layer, [4])[0]
    img = rw.render_with_value(g, layer, 4, v)
    assert_close(img, g.generate(g.sample_z([4]))[0], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------- the update
def _setup(g, layer, rank=2):
    st = rw.collect_key_stats(g, layer, range(8))
    ctx = [(0, box_mask(g.resolution, 2, 2, 10, 10)), (1, box_mask(g.resolution, 4, 4, 12, 12))]
    D = rw.context_direction(g, layer, ctx, st, rank=rank)
    return st, D


def _span_check(edit, D):
    dw = edit.delta()
    eye = torch.eye(D.shape[1])
    off = torch.einsum("...ihw,ij->...jhw", dw, eye - D.T @ D)
    assert float(off.abs().max()) < 1e-5 * max(1.0, float(dw.abs().max()))


def test_closed_form_reaches_reachable_target_and_stays_in_span():
    g = make_progan()
    st, D = _setup(g, "layer3", rank=2)
    key = brute_keys(g, "layer3", [5])
    w = g.main_weight("layer3")
    lam_true = torch.randn(8, 2, 3, 3)
    target = g.layer_value("layer3", key, w + rw.low_rank_delta(lam_true, D))[0]
    region = box_mask(8, 1, 2, 6, 7)
    info = {}
    edit = rw.rewrite(g, "layer3", D, 5, target, region, st, info=info)
    assert isinstance(edit, WeightEdit) and edit.lam.shape == (8, 2, 3, 3)
    assert info["method"] == "closed_form" and info["loss_before"] > 1
    assert rw.region_loss(g, "layer3", 5, target, region, edit) < 1e-8 * info["loss_before"]
    _span_check(edit, D)
    # the generator accepts it through an EditStack
    out = g.layer_value("layer3", key, w + EditStack((edit,)).weight_deltas()["layer3"])[0]
    assert_close(out[:, region > 0], target[:, region > 0], atol=1e-3, rtol=1e-4)


def test_closed_form_keys_orthogonal_to_D_unchanged():
    g = make_progan()
    st = rw.collect_key_stats(g, "layer3", range(8))
    one = torch.zeros(8, 8)
    one[4, 4] = 1
    D = rw.context_direction(g, "layer3", [(1, one)], st)
    k_ctx = brute_keys(g, "layer3", [1])[0, :, 4, 4].double()
    u = torch.linalg.solve(st.mom2, k_ctx)                     # C^-1 k: the C-inner-product normal
    clip = rw.copy_value(g, "layer3", 6, box_mask(16, 0, 0, 8, 8))
    target, region = rw.paste_target(g, "layer3", 1, clip, (8, 8))
    edit = rw.rewrite(g, "layer3", D, 1, target, region, st)
    assert float(edit.lam.abs().max()) > 1e-3
    keys = brute_keys(g, "layer3", [7, 8]).double()
    coef = torch.einsum("i,nihw->nhw", u, keys) / (u @ k_ctx)
    ortho = (keys - coef[:, None] * k_ctx[None, :, None, None]).float()     # <k, k_ctx>_{C^-1} = 0
    w = g.main_weight("layer3").detach()
    before = g.layer_value("layer3", ortho)
    after = g.layer_value("layer3", ortho, w + edit.delta())
    assert_close(after, before, atol=1e-4, rtol=1e-5)
    # ... while the context key itself now maps elsewhere
    kc = k_ctx.float()[None, :, None, None]
    assert float((g.layer_value("layer3", kc, w + edit.delta())
                  - g.layer_value("layer3", kc)).abs().max().detach()) > 1e-3


def test_closed_form_paste_lowers_loss_and_progress():
    g = make_progan()
    st, D = _setup(g, "layer5", rank=1)
    clip = rw.copy_value(g, "layer5", 2, box_mask(16, 3, 3, 9, 9))
    target, region = rw.paste_target(g, "layer5", 4, clip, (8, 8))
    calls = []
    edit = rw.rewrite(g, "layer5", D, 4, target, region, st,
                      progress=lambda d, t, l: calls.append((d, t, l)))
    before = rw.region_loss(g, "layer5", 4, target, region)
    assert rw.region_loss(g, "layer5", 4, target, region, edit) < 0.9 * before
    assert calls and calls[-1][:2] == (1, 1)
    with pytest.raises(ValueError, match="unknown method"):
        rw.rewrite(g, "layer5", D, 4, target, region, st, method="magic")
    with pytest.raises(ValueError, match="dirs must be"):
        rw.rewrite(g, "layer5", torch.ones(1, 3), 4, target, region, st)
    with pytest.raises(ValueError, match="target value"):
        rw.rewrite(g, "layer5", D, 4, target[:, :4], region, st)
    with pytest.raises(ValueError, match="empty region"):
        rw.rewrite(g, "layer5", D, 4, target, torch.zeros(16, 16), st)


def test_original_method_projects_and_lowers_l1():
    g = make_progan()
    st, D = _setup(g, "layer3", rank=1)
    clip = rw.copy_value(g, "layer3", 2, box_mask(16, 2, 2, 10, 10))
    target, region = rw.paste_target(g, "layer3", 4, clip, (6, 9))
    info = {}
    edit = rw.rewrite(g, "layer3", D, 4, target, region, st, method="original", niter=40,
                      info=info)
    assert info["steps"] == 40 and info["loss"] < info["loss_before"]
    assert rw.region_loss(g, "layer3", 4, target, region, edit, kind="l1") == \
        pytest.approx(info["loss"], rel=1e-4)
    _span_check(edit, D)
    # stop after a few steps still returns a projected edit
    n = iter(range(1000))
    edit2 = rw.rewrite(g, "layer3", D, 4, target, region, st, method="original", niter=40,
                       stop=lambda: next(n) >= 5, info=(i2 := {}))
    assert i2["steps"] == 5
    _span_check(edit2, D)


def test_stylegan2_iterative_lowers_loss():
    g = make_stylegan2()
    for layer in ("layer5", "layer4"):            # up-sampling (key at half res) and plain
        st, D = _setup(g, layer, rank=1)
        clip = rw.copy_value(g, layer, 2, box_mask(16, 2, 2, 9, 9))
        target, region = rw.paste_target(g, layer, 4, clip, (10, 6))
        info = {}
        edit = rw.rewrite(g, layer, D, 4, target, region, st, info=info, gn_iters=6)
        assert info["method"] == "iterative" and edit.lam.shape[-3] == 1
        assert edit.lam.shape == (1,) + tuple(g.main_weight(layer).shape[1:2]) + (1, 3, 3)
        assert info["loss"] < 0.8 * info["loss_before"]
        assert rw.region_loss(g, layer, 4, target, region, edit) == pytest.approx(info["loss"], rel=1e-3)
        _span_check(edit, D)
    # Adam refinement after LM never makes it worse (best iterate kept); progress counts both
    calls = []
    info2 = {}
    rw.rewrite(g, "layer4", D, 4, target, region, st, method="iterative", niter=10, info=info2,
               gn_iters=6,
               progress=lambda d, t, l: calls.append((d, t)))
    assert info2["loss"] <= info["loss"] + 1e-9 and calls[-1][0] == info2["steps"]
    info = {}
    rw.rewrite(g, "layer4", D, 4, target, region, st, method="original", niter=20, info=info)
    assert info["loss"] < info["loss_before"]


def test_iterative_equals_closed_form_on_a_linear_layer():
    g = make_progan()
    st, D = _setup(g, "layer3", rank=2)
    clip = rw.copy_value(g, "layer3", 2, box_mask(16, 2, 2, 10, 10))
    target, region = rw.paste_target(g, "layer3", 4, clip, (6, 9))
    cf, it = {}, {}
    rw.rewrite(g, "layer3", D, 4, target, region, st, info=cf)
    rw.rewrite(g, "layer3", D, 4, target, region, st, method="iterative", info=it)
    assert it["loss"] == pytest.approx(cf["loss"], rel=1e-3) and it["steps"] <= 3


@pytest.mark.parametrize("family,layer", [("progan", "layer7"), ("stylegan2", "layer7"),
                                          ("stylegan2", "layer8")])
def test_region_crop_equals_full_map(family, layer):
    g = make_progan((8, 8, 8, 4, 4)) if family == "progan" else make_stylegan2(size=32)
    key, state = _key_state(g, layer, g.sample_z([3]), 1.0, "buffers")
    w = g.main_weight(layer) + 0.1 * torch.randn_like(g.main_weight(layer))
    full = g.layer_value(layer, key, weight=w, state=state)[0]
    for box in [(0, 0, 32, 32), (0, 0, 1, 1), (31, 31, 32, 32), (5, 6, 9, 11), (6, 7, 13, 12)]:
        p = _problem(g, layer, 3, full, box_mask(32, *box), None)
        assert p.key.shape[-1] < key.shape[-1] or box == (0, 0, 32, 32)
        t, l, b, r = box
        assert_close(p.value(w).detach()[0], full[:, t:b, l:r], atol=1e-5, rtol=1e-5)


def test_rewrite_on_top_of_earlier_edit():
    g = make_progan()
    st, D = _setup(g, "layer3", rank=1)
    clip = rw.copy_value(g, "layer3", 2, box_mask(16, 2, 2, 10, 10))
    target, region = rw.paste_target(g, "layer3", 4, clip, (6, 9))
    e1 = rw.rewrite(g, "layer3", D, 4, target, region, st)
    deltas = EditStack((e1,)).weight_deltas()
    e2 = rw.rewrite(g, "layer3", D, 4, target, region, st, weight_deltas=deltas)
    # the first edit already solved this least-squares problem: the second changes ~nothing
    assert float(e2.lam.abs().max()) < 1e-3 * float(e1.lam.abs().max()) + 1e-5


# ------------------------------------------------------------------------------- erase
def test_erase_units_and_update():
    g = make_progan()
    st = rw.collect_key_stats(g, "layer4", range(8))
    ctx = [(0, box_mask(16, 0, 0, 6, 6)), (3, box_mask(16, 8, 8, 16, 16))]
    units = rw.erase_units(g, "layer4", ctx, st, drank=3)
    keys, w = rw.context_keys(g, "layer4", ctx)
    score = ((keys ** 2 / torch.diagonal(st.mom2)) * w[:, None]).sum(0) / w.sum()
    assert units == torch.argsort(score, descending=True)[:3].tolist()
    target, region = rw.erase_target(g, "layer4", 0, units)
    k = brute_keys(g, "layer4", [0]).clone()
    k[:, units] = 0
    assert_close(target, g.layer_value("layer4", k)[0])
    assert bool(region.all())
    info = {}
    edit = rw.erase(g, "layer4", ctx, st, drank=3, info=info)
    assert info["loss"] < info["loss_before"] and "erase" in edit.label
    with pytest.raises(ValueError, match="drank"):
        rw.erase_units(g, "layer4", ctx, st, drank=9)
    with pytest.raises(ValueError, match="empty context"):
        rw.erase(g, "layer4", [], st)


def test_model_wrapper_and_weightless_layer(progan_bundle):
    import core
    model = core.load_model(progan_bundle)
    st = rw.collect_key_stats(model, "layer2", range(3))
    assert st.meta["model"] == "tiny-progan"
    sg = make_stylegan2()
    with pytest.raises(KeyError, match="constant input"):
        rw.collect_key_stats(sg, "layer1", range(2))


# ------------------------------------------------------------------------------- evaluation
class FakeSegmenter:
    """'spire' = bright pixels, 'tree' = dark pixels, 'sky' = the rest."""
    concepts = ["sky", "spire", "tree"]

    def segment(self, images):
        m = images.mean(1)
        out = torch.zeros(m.shape, dtype=torch.long)
        out[m > 0.05] = 1
        out[m < -0.05] = 2
        return out


def test_evaluate_rewrite_and_parser():
    from core.eval.rewrite import add_eval_parser, evaluate_rewrite
    from core.rules import Rule
    g = make_progan()
    st = rw.collect_key_stats(g, "layer4", range(6))
    m = box_mask(256, 64, 64, 160, 160).numpy()
    rule = Rule(key=[(0, m)], object=(2, m), paste=(3, m), layer="layer4")
    out = evaluate_rewrite(g, FakeSegmenter(), rule, "0-5", C=st, niter_original=10, batch_size=4)
    assert set(out) == {"ours", "original"}
    for r in out.values():
        for k in ("effectiveness", "generality", "collateral_clean", "collateral_outside", "seconds"):
            assert k in r
        assert r["images"] == 6 and r["seconds"] > 0
        for k in ("effectiveness", "generality"):
            assert r[k] is None or 0 <= r[k] <= 1
        assert r["collateral_outside"] >= 0
    with pytest.raises(ValueError, match="unknown concept"):
        evaluate_rewrite(g, FakeSegmenter(), rule, "0-1", source_concept="dome", C=st)
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="what"))
    args = parser.parse_args(["rewrite", "bundle", "rule.json"])
    assert args.images == "100000-100199" and args.out is None and callable(args.run)


def test_evaluate_erase_rule():
    from core.eval.rewrite import evaluate_rewrite
    from core.rules import Rule
    g = make_progan()
    st = rw.collect_key_stats(g, "layer4", range(6))
    seg = FakeSegmenter()
    rule = Rule(key=[(0, box_mask(256, 64, 64, 160, 160).numpy())], erase=True, layer="layer4")
    with pytest.raises(ValueError, match="erase rule has no target"):
        evaluate_rewrite(g, seg, rule, "0-1", C=st)
    concept = seg.concepts[1]
    out = evaluate_rewrite(g, seg, rule, "0-5", source_concept=concept, C=st, methods=("ours",),
                           batch_size=4)["ours"]
    assert out["effectiveness"] is None and out["generality"] is None
    clean = seg.segment(g.generate(g.sample_z(range(6))))
    shown = ((clean == 1).flatten(1).float().mean(1) >= 0.005).float().mean()
    assert out["rate_before"] == pytest.approx(float(shown))
    assert 0 <= out["removal"] <= 1 and 0 <= out["rate_after"] <= 1 and out["collateral_outside"] > 0


def test_measure_edits_against_the_model_before_and_region_concept():
    """What the Rewrite tab measures after a manual rewrite: the newest edit against the model
    before it (here the same edit twice: nothing changed), and the concept a context shows."""
    from core.eval.rewrite import measure_edits, region_concept
    g, seg = make_progan(), FakeSegmenter()
    torch.manual_seed(0)
    delta = {"layer4": 0.3 * torch.randn_like(g.main_weight("layer4"))}
    edited = measure_edits(g, seg, "0-5", {"e": delta}, 1, 2, batch_size=4)["e"]
    assert edited["collateral_outside"] > 0 and edited["images"] == 6
    same = measure_edits(g, seg, "0-5", {"e": delta}, 1, 2, base_deltas=delta, batch_size=4)["e"]
    assert same["collateral_outside"] == 0 and same["removal"] == 0 and same["effectiveness"] == 0
    labels = seg.segment(g.generate(g.sample_z([3])))[0]
    for concept in labels.unique().tolist():
        assert region_concept(g, seg, [(3, (labels == concept).float().numpy())]) == concept


def test_cli_eval_rewrite_end_to_end(progan_bundle, tmp_path, capsys, monkeypatch):
    import json
    from core import __main__ as cli
    from core.rules import Rule, write_rule
    from core.segmenter import Segmenter, ToySegNet, save_segmenter

    torch.manual_seed(0)
    concepts = ["sky", "spire", "tree"]
    save_segmenter(Segmenter(ToySegNet(3, width=2), concepts,
                             config={"architecture": "toyseg", "concepts": concepts,
                                     "kwargs": {"width": 2}}), progan_bundle)
    assert cli.main(["stats", str(progan_bundle), "--layer", "layer4", "--samples", "3"]) == 0
    m = box_mask(256, 64, 64, 160, 160).numpy()
    rule = tmp_path / "rule.json"
    write_rule(Rule(key=[(0, m)], object=(2, m), paste=(3, m), layer="layer4"), rule)
    out = tmp_path / "eval.json"
    assert cli.main(["eval", "rewrite", str(progan_bundle), str(rule), "--images", "0-3",
                     "--niter", "5", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["results"]) == {"ours", "original"} and doc["results"]["ours"]["images"] == 4
    assert doc["rule"] == str(rule)             # outside the working folder: named as given
    monkeypatch.chdir(tmp_path)
    assert cli.main(["eval", "rewrite", str(progan_bundle), str(rule), "--images", "0",
                     "--methods", "ours", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rule"] == "rule.json"
    printed = capsys.readouterr().out
    assert "effect." in printed and "original" in printed and "wrote" in printed
