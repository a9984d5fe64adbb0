"""core.edits: unit and weight edits, the edit stack, serialization and the caching renderer."""
import json
import threading

import pytest
import torch

from conftest import make_progan, make_stylegan2
from core.edits import (EDITS_JSON, EDITS_TENSORS, EditStack, Renderer, UnitEdit, WeightEdit,
                        layer_shape, resize_mask)
from core.generators import LayerError

FAMILIES = ["progan", "stylegan2"]


def make(family, seed=0):
    return make_progan(seed=seed) if family == "progan" else make_stylegan2(seed=seed)


def lowrank(g, layer, rank=2, seed=0, scale=0.1):
    gen = torch.Generator().manual_seed(seed)
    w = g.main_weight(layer)
    lam = torch.randn(*w.shape[:-3], rank, *w.shape[-2:], generator=gen) * scale
    dirs = torch.randn(rank, w.shape[-3], generator=gen)
    return WeightEdit(layer, lam, dirs, label=f"rank{rank}")


def full_render(g, z, stack):
    return g.generate(z, weight_deltas=stack.weight_deltas(g) or None, edit=stack.feature_edit())


def weights_snapshot(g):
    return {k: v.detach().clone() for k, v in g.state_dict().items()}


def assert_same_weights(g, snap):
    now = g.state_dict()
    assert set(now) == set(snap)
    for k, v in snap.items():
        assert torch.equal(now[k], v), k


def sample_stack(g, family):
    """A mixed stack: a weight edit early, strokes at layer4 (8x8), a dense weight edit later."""
    mask = torch.zeros(8, 8)
    mask[2:5, 1:4] = 1.0
    mask[6, 6] = 0.5
    w5 = g.main_weight("layer5")
    dense = torch.randn(w5.shape, generator=torch.Generator().manual_seed(3)) * 0.05
    return EditStack().push(
        lowrank(g, "layer3"),
        UnitEdit("layer4", [0, 3, 5], [4.0, 2.0, -1.0], mask, 1.0, "draw"),
        UnitEdit("layer4", [3, 6], None, None, 0.5, "dim"),
        WeightEdit.full("layer5", dense, "adapt"),
    )


# ------------------------------------------------------------------ the edit formula
def test_unit_edit_formula_partial_alpha_and_mask():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4, 4)
    keep = x.clone()
    mask = torch.rand(4, 4)
    e = UnitEdit("layer4", [1, 3], [2.0, -1.0], mask, alpha=0.5)
    out = e.apply(x)
    assert torch.equal(x, keep)                            # input untouched
    a = 0.5 * mask
    assert torch.allclose(out[:, 1], x[:, 1] * (1 - a) + 2.0 * a)
    assert torch.allclose(out[:, 3], x[:, 3] * (1 - a) - 1.0 * a)
    others = [0, 2, 4, 5]
    assert torch.equal(out[:, others], x[:, others])       # other units untouched


def test_remove_everywhere_zeroes_units():
    x = torch.randn(1, 4, 3, 3)
    out = UnitEdit("layer1", [2], None).apply(x)
    assert torch.equal(out[:, 2], torch.zeros(1, 3, 3))
    assert torch.equal(out[:, [0, 1, 3]], x[:, [0, 1, 3]])


def test_scalar_value_is_broadcast_to_units():
    e = UnitEdit("layer1", [0, 1], 3.0)
    assert e.values == (3.0, 3.0)


def test_composition_in_order_is_alpha_over():
    torch.manual_seed(1)
    x = torch.randn(1, 3, 4, 4)
    m1, m2 = torch.rand(4, 4), torch.rand(4, 4)
    e1 = UnitEdit("layer4", [0], [2.0], m1, 0.7)
    e2 = UnitEdit("layer4", [0], [-3.0], m2, 0.6)
    out = EditStack((e1, e2)).feature_edit()("layer4", x)
    a1, a2 = 0.7 * m1, 0.6 * m2
    a = 1 - (1 - a1) * (1 - a2)                       # GANPaint's alpha-over
    v = (2.0 * a1 * (1 - a2) - 3.0 * a2) / a
    assert torch.allclose(out[0, 0], x[0, 0] * (1 - a) + v * a, atol=1e-5)
    rev = EditStack((e2, e1)).feature_edit()("layer4", x)
    assert not torch.allclose(rev, out)               # order matters
    assert torch.equal(EditStack((e1, e2)).feature_edit()("layer3", x), x)   # other layers


def test_mask_of_another_size_is_resized_by_max_pooling():
    x = torch.randn(1, 2, 4, 4)
    big = torch.zeros(8, 8)
    big[1, 6] = 1.0                                   # one pixel -> cell (0, 3)
    out = UnitEdit("layer4", [0], [5.0], big).apply(x)
    small = torch.zeros(4, 4)
    small[0, 3] = 1.0
    assert torch.equal(out, UnitEdit("layer4", [0], [5.0], small).apply(x))
    assert torch.equal(resize_mask(big, (4, 4)), small)
    assert out[0, 0, 0, 3] == 5.0 and torch.equal(out[0, 0, 1:], x[0, 0, 1:])


@pytest.mark.parametrize("family", FAMILIES)
def test_empty_mask_is_no_change(family):
    g = make(family)
    z = g.sample_z(range(2))
    e = UnitEdit("layer4", [0, 1], [9.0, 9.0], torch.zeros(8, 8))
    assert e.is_noop
    stack = EditStack().push(e)
    assert stack.feature_edit() is None
    assert torch.equal(Renderer(g).render(z, stack), g.generate(z))


# ------------------------------------------------------------------ the stack
def test_stack_is_immutable_push_undo_clear():
    a, b = UnitEdit("layer1", [0]), UnitEdit("layer2", [1], [1.0])
    s0 = EditStack()
    s1 = s0.push(a)
    s2 = s1.push(b)
    assert len(s0) == 0 and len(s1) == 1 and len(s2) == 2
    assert s2.undo().edits == (a,) and s2.edits == (a, b)
    assert s2.undo(5).edits == () and s0.undo().edits == ()
    assert s2.clear().edits == ()
    assert s2.layers() == ["layer1", "layer2"]
    with pytest.raises(Exception):
        s2.edits = ()
    with pytest.raises(Exception):
        a.units = (3,)
    with pytest.raises(TypeError):
        EditStack(("not an edit",))


def test_edits_copy_their_tensors():
    m = torch.ones(4, 4)
    e = UnitEdit("layer4", [0], None, m)
    m.zero_()
    assert bool((e.mask == 1).all())


@pytest.mark.parametrize("family", FAMILIES)
def test_weight_edit_low_rank_delta(family):
    g = make(family)
    we = lowrank(g, "layer4", rank=3)
    w = g.main_weight("layer4")
    d = we.delta()
    assert d.shape == w.shape and we.shape == tuple(w.shape)
    # ΔW[..., o, i, y, x] = sum_r lam[..., o, r, y, x] dirs[r, i]
    lam = we.lam.reshape(-1, *we.lam.shape[-3:])
    expect = sum(lam[:, r][:, None] * we.dirs[r][None, :, None, None] for r in range(3))
    assert torch.allclose(d, expect.reshape(w.shape), atol=1e-6)


def test_weight_deltas_sum_per_layer():
    g = make_progan()
    a, b = lowrank(g, "layer3", seed=1), lowrank(g, "layer3", seed=2)
    c = WeightEdit.full("layer5", torch.ones_like(g.main_weight("layer5")))
    deltas = EditStack((a, c, b)).weight_deltas(g)
    assert set(deltas) == {"layer3", "layer5"}
    assert torch.allclose(deltas["layer3"], a.delta() + b.delta())
    assert torch.equal(deltas["layer5"], torch.ones_like(g.main_weight("layer5")))


@pytest.mark.parametrize("family", FAMILIES)
def test_weight_edit_changes_output_and_base_stays_byte_identical(family, tmp_path):
    g = make(family)
    snap = weights_snapshot(g)
    z = g.sample_z(range(3))
    before = g.generate(z)
    stack = sample_stack(g, family)
    r = Renderer(g, cache_layer="layer4")
    edited = r.render(z, stack)
    assert not torch.allclose(edited, before)
    r.render(z, stack.undo())
    stack.to_files(tmp_path / "e")
    EditStack.from_files(tmp_path / "e", g)
    assert_same_weights(g, snap)
    assert torch.equal(g.generate(z), before)


# ------------------------------------------------------------------ renderer
@pytest.mark.parametrize("family", FAMILIES)
def test_renderer_is_bit_identical_to_full_render(family):
    g = make(family)
    z = g.sample_z([0, 5, 7])
    stack = sample_stack(g, family)
    r = Renderer(g)
    # growing the stack stroke by stroke, like a painting session
    for k in range(len(stack) + 1):
        s = EditStack(stack.edits[:k])
        for _ in range(2):                       # second time comes from the cache
            assert torch.equal(r.render(z, s), full_render(g, z, s)), k
    assert r.hits >= len(stack) + 1
    # unit edits at the first and the last layer too
    for layer in (g.layers[0], g.layers[-1]):
        s = stack.push(UnitEdit(layer, [1], [2.0]))
        assert torch.equal(r.render(z, s), full_render(g, z, s))
        assert torch.equal(r.render(z, s), full_render(g, z, s))


@pytest.mark.parametrize("family", FAMILIES)
def test_renderer_cache_layer_hint_makes_first_stroke_a_hit(family):
    g = make(family)
    z = g.sample_z([1, 2])
    r = Renderer(g, cache_layer="layer4")
    r.render(z)                                   # unedited view fills the cache before layer4
    assert r.cache_info()["misses"] == 1
    stroke = EditStack().push(UnitEdit("layer4", [0], [3.0]))
    out = r.render(z, stroke)
    assert r.cache_info()["hits"] == 1
    assert torch.equal(out, full_render(g, z, stroke))


def test_renderer_cache_key_includes_early_weight_edits_and_options():
    g = make_stylegan2()
    z = g.sample_z([3])
    r = Renderer(g)
    paint = UnitEdit("layer5", [0], [2.0])
    s1 = EditStack((lowrank(g, "layer3", seed=1), paint))
    s2 = EditStack((lowrank(g, "layer3", seed=2), paint))
    a, b = r.render(z, s1), r.render(z, s2)
    assert r.hits == 0 and not torch.equal(a, b)
    assert torch.equal(b, full_render(g, z, s2))
    # truncation and noise are part of the key
    c = r.render(z, s1, truncation=0.5, noise=7)
    expect = g.generate(z, truncation=0.5, noise=7, weight_deltas=s1.weight_deltas(g),
                        edit=s1.feature_edit())
    assert torch.equal(c, expect) and not torch.equal(c, a)
    assert torch.equal(r.render(z, s1), a)


@pytest.mark.parametrize("family", FAMILIES)
def test_two_sessions_sharing_a_renderer_are_isolated(family):
    g = make(family)
    snap = weights_snapshot(g)
    z = g.sample_z([4, 9])
    r = Renderer(g, cache_layer="layer4")
    mask = torch.zeros(8, 8)
    mask[:4] = 1
    alice = EditStack().push(UnitEdit("layer4", [0, 1], [5.0, 5.0], mask, label="alice"))
    bob = EditStack().push(lowrank(g, "layer2", seed=5), UnitEdit("layer4", [2], None))
    expect_a, expect_b = full_render(g, z, alice), full_render(g, z, bob)
    for _ in range(2):                            # interleaved, sharing cache entries
        assert torch.equal(r.render(z, alice), expect_a)
        assert torch.equal(r.render(z, bob), expect_b)
        assert torch.equal(r.render(z), g.generate(z))
    assert_same_weights(g, snap)


def test_renderer_threads_each_see_their_own_edits():
    g = make_progan()
    r = Renderer(g, cache_layer="layer4")
    z = g.sample_z(range(2))
    stacks = [EditStack().push(UnitEdit("layer4", [i], [float(i + 1)])) for i in range(4)]
    expect = [full_render(g, z, s) for s in stacks]
    errors = []

    def work(i):
        for _ in range(3):
            if not torch.equal(r.render(z, stacks[i]), expect[i]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_renderer_cache_is_bounded_lru():
    g = make_progan()
    r = Renderer(g, max_entries=2)
    zs = [g.sample_z([i]) for i in range(3)]
    for z in zs:
        r.render(z)
    assert r.cache_info()["entries"] == 2
    r.render(zs[2])
    assert r.hits == 1
    r.render(zs[0])                              # evicted
    assert r.misses == 4
    r.clear_cache()
    assert r.cache_info()["entries"] == 0


def test_render_numbers_uses_model_defaults_and_batches(progan_bundle):
    import core
    model = core.load_model(progan_bundle)
    r = Renderer(model)
    stack = EditStack().push(UnitEdit("layer3", [1], [2.0]))
    out = r.render_numbers("0-4", stack, batch_size=2)
    z = model.sample_z(range(5))
    assert torch.equal(out, torch.cat([full_render(model.generator, z[i:i + 2], stack)
                                       for i in range(0, 5, 2)]))


def test_layer_shape():
    g = make_progan()
    assert layer_shape(g, "layer1") == (8, 4, 4)
    assert layer_shape(g, "layer4") == (8, 8, 8)
    assert layer_shape(g, "layer6") == (4, 16, 16)
    with pytest.raises(LayerError, match="layer1, layer2"):
        layer_shape(g, "layer9")


# ------------------------------------------------------------------ serialization
@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_gives_identical_images(family, tmp_path):
    g = make(family)
    stack = sample_stack(g, family)
    folder = stack.to_files(tmp_path / "edits", model=g)
    assert sorted(p.name for p in folder.iterdir()) == sorted([EDITS_JSON, EDITS_TENSORS])
    doc = json.loads((folder / EDITS_JSON).read_text())
    assert [e["type"] for e in doc["edits"]] == ["weight", "unit", "unit", "weight"]
    assert doc["edits"][1]["units"] == [0, 3, 5] and doc["edits"][2]["values"] is None
    assert doc["edits"][1]["label"] == "draw"
    back = EditStack.from_files(folder, g)
    assert [type(e) for e in back] == [type(e) for e in stack]
    z = g.sample_z(range(3))
    assert torch.equal(full_render(g, z, back), full_render(g, z, stack))
    assert [e.fingerprint() for e in back] == [e.fingerprint() for e in stack]


def test_empty_stack_round_trip(tmp_path):
    g = make_progan()
    back = EditStack.from_files(EditStack().to_files(tmp_path / "e"), g)
    assert len(back) == 0


def _write(tmp_path, stack, edit_json=None, edit_tensors=None):
    folder = stack.to_files(tmp_path / "bad")
    if edit_json:
        doc = json.loads((folder / EDITS_JSON).read_text())
        edit_json(doc)
        (folder / EDITS_JSON).write_text(json.dumps(doc))
    if edit_tensors:
        from safetensors.torch import load_file, save_file
        t = load_file(str(folder / EDITS_TENSORS))
        edit_tensors(t)
        save_file(t, str(folder / EDITS_TENSORS))
    return folder


def test_from_files_unknown_layer_lists_valid_layers(tmp_path):
    g = make_progan()
    folder = _write(tmp_path, EditStack().push(UnitEdit("layer4", [0])),
                    lambda d: d["edits"][0].update(layer="layer99"))
    with pytest.raises(LayerError, match=r"edit 0.*layer99.*layer1, layer2, layer3"):
        EditStack.from_files(folder, g)


def test_from_files_unit_out_of_range(tmp_path):
    g = make_progan()
    folder = _write(tmp_path, EditStack().push(UnitEdit("layer4", [0, 8])))
    with pytest.raises(ValueError, match=r"edit 0.*units \[8\] out of range.*8 units"):
        EditStack.from_files(folder, g)


def test_from_files_nan_lam_names_edit_and_field(tmp_path):
    g = make_progan()
    stack = EditStack().push(UnitEdit("layer4", [0]), lowrank(g, "layer3"))

    def poison(t):
        t["edit1.lam"][0, 0, 0, 0] = float("nan")
    folder = _write(tmp_path, stack, edit_tensors=poison)
    with pytest.raises(ValueError, match=r"edit 1 \(weight at 'layer3'\): lam holds NaN"):
        EditStack.from_files(folder, g)


def test_from_files_shape_errors(tmp_path):
    g = make_progan()
    # dirs from another layer width: ΔW does not fit the weight
    w = g.main_weight("layer5")             # [4, 8, 3, 3]
    bad = WeightEdit("layer5", torch.zeros(4, 1, 3, 3), torch.zeros(1, 8))
    folder = _write(tmp_path, EditStack().push(bad),
                    lambda d: d["edits"][0].update(layer="layer3"))   # layer3 is [8, 8, 3, 3]
    with pytest.raises(ValueError, match=r"edit 0.*ΔW \[4, 8, 3, 3\].*weight is \[8, 8, 3, 3\]"):
        EditStack.from_files(folder, g)
    assert tuple(w.shape) == (4, 8, 3, 3)
    # lam and dirs disagree on the rank
    def mismatch(t):
        t["edit0.dirs"] = torch.zeros(2, 8)
    folder = _write(tmp_path, EditStack().push(bad), edit_tensors=mismatch)
    with pytest.raises(ValueError, match=r"edit 0.*lam must be shaped.*rank 2"):
        EditStack.from_files(folder, g)


def test_from_files_bad_documents(tmp_path):
    g = make_progan()
    stack = EditStack().push(UnitEdit("layer4", [0], None, torch.ones(8, 8)))
    folder = _write(tmp_path, stack, lambda d: d["edits"][0].update(type="magic"))
    with pytest.raises(ValueError, match="unknown edit type 'magic'"):
        EditStack.from_files(folder, g)
    folder = _write(tmp_path, stack, lambda d: d["edits"][0].update(mask="nope"))
    with pytest.raises(ValueError, match="mask tensor 'nope' is not in"):
        EditStack.from_files(folder, g)
    folder = _write(tmp_path, stack, lambda d: d["edits"][0].update(units="0"))
    with pytest.raises(ValueError, match="units"):
        EditStack.from_files(folder, g)
    folder = _write(tmp_path, stack, lambda d: d.update(format="other"))
    with pytest.raises(ValueError, match="not an edits file"):
        EditStack.from_files(folder, g)
    (folder / EDITS_JSON).write_text("{nope")
    with pytest.raises(ValueError, match="malformed JSON"):
        EditStack.from_files(folder, g)
    with pytest.raises(FileNotFoundError):
        EditStack.from_files(tmp_path / "missing", g)
    # made for another family
    folder = stack.to_files(tmp_path / "sg", model=make_stylegan2())
    with pytest.raises(ValueError, match="made for a stylegan2 model"):
        EditStack.from_files(folder, g)


def test_from_files_nan_mask(tmp_path):
    g = make_progan()
    stack = EditStack().push(UnitEdit("layer4", [0], None, torch.ones(8, 8)))

    def poison(t):
        t["edit0.mask"][0, 0] = float("inf")
    folder = _write(tmp_path, stack, edit_tensors=poison)
    with pytest.raises(ValueError, match=r"edit 0 \(unit at 'layer4'\): mask holds NaN"):
        EditStack.from_files(folder, g)


def test_bad_edits_are_refused_when_made():
    with pytest.raises(ValueError, match="mask holds NaN"):
        UnitEdit("layer4", [0], None, torch.full((2, 2), float("nan")))
    with pytest.raises(ValueError, match=r"mask values must lie in \[0, 1\]"):
        UnitEdit("layer4", [0], None, torch.full((2, 2), 2.0))
    with pytest.raises(ValueError, match=r"mask must be \[h, w\]"):
        UnitEdit("layer4", [0], None, torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="units listed twice"):
        UnitEdit("layer4", [1, 1])
    with pytest.raises(ValueError, match="non-negative integers"):
        UnitEdit("layer4", [-1])
    with pytest.raises(ValueError, match="2 values for 1 units"):
        UnitEdit("layer4", [1], [1.0, 2.0])
    with pytest.raises(ValueError, match="values hold NaN"):
        UnitEdit("layer4", [1], [float("nan")])
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
        UnitEdit("layer4", [1], alpha=1.5)
    with pytest.raises(ValueError, match="lam holds NaN"):
        WeightEdit("layer4", torch.full((2, 1, 3, 3), float("nan")), torch.ones(1, 2))
    with pytest.raises(ValueError, match="lam must be shaped"):
        WeightEdit("layer4", torch.ones(2, 3, 3, 3), torch.ones(1, 2))
    with pytest.raises(ValueError, match="needs both lam and dirs"):
        WeightEdit("layer4", torch.ones(2, 1, 3, 3))
    with pytest.raises(ValueError, match="delta holds NaN"):
        WeightEdit.full("layer4", torch.full((2, 2, 3, 3), float("inf")))


def test_in_memory_stacks_are_validated_before_rendering():
    g = make_progan()
    z = g.sample_z([0])
    r = Renderer(g)
    with pytest.raises(LayerError, match="unknown layer 'layer42'.*layer1"):
        r.render(z, EditStack().push(UnitEdit("layer42", [0])))
    with pytest.raises(ValueError, match="out of range"):
        r.render(z, EditStack().push(UnitEdit("layer6", [4])))       # layer6 has 4 units
    with pytest.raises(ValueError, match="delta has shape"):
        r.render(z, EditStack().push(WeightEdit.full("layer4", torch.zeros(1, 8, 3, 3))))
    sg = make_stylegan2()
    with pytest.raises(LayerError, match="constant input"):
        EditStack().push(WeightEdit.full("layer1", torch.zeros(1, 8, 8, 3, 3))).validate(sg)


def test_renderer_of_an_edited_model_keeps_its_edits_under_each_stack(tmp_path):
    import core
    from core.bundle import save_bundle
    from core.model import EditedModel
    base = core.load_model(save_bundle(make_progan(), tmp_path / "b", name="b"))
    shared = EditStack().push(UnitEdit("layer2", [0, 3], label="shared"))
    edited = EditedModel(base, shared)
    extra = EditStack().push(UnitEdit("layer4", [1], [2.0], label="mine"))
    z = base.sample_z([0, 1])
    r = Renderer(edited, cache_layer="layer4", local=True)
    assert torch.allclose(r.render(z), edited.generate(z), atol=1e-6)
    want = Renderer(base).render(z, shared.push(*extra))
    assert torch.allclose(r.render(z, extra), want, atol=1e-6)
