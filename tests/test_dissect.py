"""Dissection (core/dissect/, core/cli/dissect.py): counts, IoU, thresholds, quantiles and top-k
checked against brute-force numpy on the same data; upsampling; catalogs; CLI; bad input."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import core
from core import __main__ as cli
from core.bundle import Bundle
from core.dissect import (FORMAT, MAXIOU_LEVELS, DissectionStopped, Tally, compact_numbers, dissect,
                          interpolation_matrix, layer_chart, load_catalog, save_catalog, summary_table,
                          unit_overlay, upsample)
from core.dissect.catalog import _dissect, _dumps
from core.generators import LayerError

from conftest import make_progan


class FakeSegmenter:
    """Concept 1 where red > 0, concept 2 where red <= 0 and green > 0, else concept 0."""
    concepts = ["other", "red", "green"]
    id = "fake-rg"

    def __init__(self, stride: int = 1):
        self.stride = stride

    def segment(self, images):
        images = images[:, :, ::self.stride, ::self.stride]
        r, g = images[:, 0] > 0, images[:, 1] > 0
        return torch.where(r, 1, torch.where(g, 2, 0))


def tiny_model(sizes=(8, 8, 8, 4), seed=0):
    g = make_progan(sizes, seed)
    return core.load_model(Bundle(None, {"name": "tiny", "architecture": "progan"}, g))


def brute(model, seg, layer, numbers):
    """Upsampled activations [N,C,H,W] (float64) and labels [N,H,W] computed directly."""
    z = model.sample_z(numbers)
    feats = model.features(z, layer)
    labels = seg.segment(model.generate(z))
    up = F.interpolate(feats, size=labels.shape[1:], mode="bilinear", align_corners=False)
    return feats.double().numpy(), up.double().numpy(), labels.numpy()


def brute_iqr(inter, a, cpx, total):
    """Information quality ratio I(M;Y)/H(M,Y) from the 2x2 table, and the chance IoU."""
    iqr, chance = [], []
    for i, c in zip(inter, cpx):
        table = np.array([[i, a - i], [c - i, total - a - c + i]], dtype=float) / total
        pm, py = table.sum(1), table.sum(0)
        mi = sum(table[x, y] * np.log(table[x, y] / (pm[x] * py[y]))
                 for x in range(2) for y in range(2) if table[x, y] > 0)
        h = -sum(p * np.log(p) for p in table.ravel() if p > 0)
        iqr.append(max(mi, 0) / h if h > 0 else 0.0)
        fa, fc = a / total, c / total
        chance.append(fa * fc / (fa + fc - fa * fc) if fa + fc > 0 else 0.0)
    return np.array(iqr), np.array(chance)


# ----------------------------------------------------------------------------- upsampling
def pixel_centre_bilinear(a: np.ndarray, H: int, W: int) -> np.ndarray:
    """Explicit formula: output pixel (i, j) samples the input at its centre mapped back,
    y = (i + 0.5) * h / H - 0.5, clamped to [0, h-1] (edge values repeated); same for x."""
    h, w = a.shape
    out = np.zeros((H, W))
    for i in range(H):
        y = min(max((i + 0.5) * h / H - 0.5, 0), h - 1)
        y0 = int(math.floor(y)); y1 = min(y0 + 1, h - 1); wy = y - y0
        for j in range(W):
            x = min(max((j + 0.5) * w / W - 0.5, 0), w - 1)
            x0 = int(math.floor(x)); x1 = min(x0 + 1, w - 1); wx = x - x0
            out[i, j] = ((1 - wy) * ((1 - wx) * a[y0, x0] + wx * a[y0, x1])
                         + wy * ((1 - wx) * a[y1, x0] + wx * a[y1, x1]))
    return out


@pytest.mark.parametrize("h,w,H,W", [(3, 4, 7, 9), (8, 8, 64, 64), (4, 4, 4, 4), (2, 3, 16, 8)])
def test_upsampling_is_pixel_centre_bilinear_with_border_padding(h, w, H, W):
    a = torch.randn(h, w, generator=torch.Generator().manual_seed(h * 100 + W), dtype=torch.float64)
    want = pixel_centre_bilinear(a.numpy(), H, W)
    assert np.allclose(upsample(a, (H, W)).double().numpy(), want, atol=1e-5)
    # the matrix form the tally uses is the same map
    m = interpolation_matrix(H, h, torch.float64) @ a @ interpolation_matrix(W, w, torch.float64).T
    assert np.allclose(m.numpy(), want, atol=1e-12)
    # the original code's construction: grid_sample with a pixel-centre grid written for
    # align_corners=True semantics and border padding (reference notes, section 2a)
    ys = ((torch.arange(H, dtype=torch.float64) + 0.5) * h / H - 0.5) / max(h - 1, 1) * 2 - 1
    xs = ((torch.arange(W, dtype=torch.float64) + 0.5) * w / W - 0.5) / max(w - 1, 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None]
    if h > 1 and w > 1:
        orig = F.grid_sample(a[None, None], grid, mode="bilinear", padding_mode="border",
                             align_corners=True)[0, 0]
        assert np.allclose(orig.numpy(), want, atol=1e-10)


def test_align_corners_true_would_shift_the_map():
    # align_corners=True maps the corner cells' *centres* onto the output's corner pixels: for
    # 8 -> 64 a one-hot feature cell lands off its own 8x8 block, so masks drift outward.
    a = torch.zeros(8, 8)
    a[0, 0] = 1
    right = upsample(a, (64, 64))
    wrong = F.interpolate(a[None, None], size=(64, 64), mode="bilinear", align_corners=True)[0, 0]
    assert not torch.allclose(right, wrong, atol=0.05)
    assert right[:4, :4].eq(1).all()                    # the cell's own top-left quarter is flat
    assert wrong[3, 3] < 0.7                             # align_corners=True already decays there


# ----------------------------------------------------------------------------- counts vs brute force
@pytest.fixture(scope="module")
def maxiou_run():
    torch.manual_seed(0)
    model = tiny_model()
    seg = FakeSegmenter()
    numbers = list(range(3, 27))
    cat, tally, res = _dissect(model, seg, "layer3", numbers, batch_size=7, top_k=5)
    return model, seg, numbers, cat, tally, res


def test_maxiou_counts_and_iou_match_brute_force(maxiou_run):
    model, seg, numbers, cat, tally, res = maxiou_run
    feats, up, labels = brute(model, seg, "layer3", numbers)
    N, C, H, W = up.shape
    K = len(seg.concepts)
    total = N * H * W
    assert res["total_pixels"] == total
    onehot = np.stack([labels == k for k in range(K)], 1)              # [N,K,H,W]
    cpx = onehot.sum((0, 2, 3))
    assert np.array_equal(res["concept_pixels"].numpy(), cpx)
    thr = res["thresholds"].numpy()
    best = np.zeros((C, K))
    for u in range(C):
        for li in range(len(MAXIOU_LEVELS)):
            m = up[:, u] >= thr[u, li]
            a = m.sum()
            inter = (m[:, None] & onehot).sum((0, 2, 3))
            # exact counts (a pixel within float rounding of a threshold may flip: allow 2)
            assert abs(int(res["active"][u, li]) - a) <= 2
            assert np.abs(res["inter"][u, li].numpy() - inter).max() <= 2
            assert abs(float(res["levels"][u, li]) - (1 - a / total)) <= 2 / total
            iou = inter / np.maximum(a + cpx - inter, 1)
            assert np.allclose(res["iou"][u, li].numpy(), iou, atol=1e-3)
            iqr, chance = brute_iqr(inter, a, cpx, total)
            assert np.allclose(res["iqr"][u, li].numpy(), iqr, atol=1e-3)
            assert np.allclose(res["iou_chance"][u, li].numpy(), chance, atol=1e-3)
            best[u] = np.maximum(best[u], iou)
        # the candidate levels are realised closely (exact level recorded in "levels")
        assert np.abs(res["levels"][u].numpy() - np.array(MAXIOU_LEVELS)).max() < 0.03
    for u, entry in enumerate(cat["units"]):
        k = int(np.argmax(best[u]))
        assert entry["label"] == seg.concepts[k]
        assert entry["iou"] == pytest.approx(best[u, k], abs=1e-3)
        assert entry["interpretable"] == (best[u, k] > 0.04)
        m = up[:, u] >= entry["threshold"]                              # rounded threshold
        i = (m & (labels == k)).sum()
        assert i / (m.sum() + cpx[k] - i) == pytest.approx(best[u, k], abs=0.01)
        assert entry["level"] == pytest.approx(1 - m.sum() / total, abs=0.01)
    # rankings, interpretable counts, draw values (mean upsampled activation where present)
    for k, c in enumerate(seg.concepts):
        ranking = cat["concepts"][c]
        assert [e["unit"] for e in ranking] == list(np.argsort(-best[:, k], kind="stable"))[:len(ranking)]
        assert cat["interpretable"][c] == sum(1 for e in cat["units"]
                                              if e["label"] == c and e["interpretable"])
        means = (up * onehot[:, k][:, None]).sum((0, 2, 3)) / cpx[k]
        assert np.allclose(cat["draw_values"][c], means, atol=1e-4)
        assert cat["concept_fraction"][c] == pytest.approx(cpx[k] / total, abs=1e-5)
    assert cat["feature_shape"] == [C, 8, 8] and cat["seg_size"] == [16, 16]
    assert cat["samples"] == N and cat["image_numbers"] == "3-26" and cat["seed"] == 1


def test_topk_matches_brute_force(maxiou_run):
    model, seg, numbers, cat, tally, res = maxiou_run
    feats, _, _ = brute(model, seg, "layer3", numbers)
    smax = feats.max((2, 3))                                            # [N, C]
    for u, entry in enumerate(cat["units"]):
        order = np.argsort(-smax[:, u])[:5]
        assert entry["top"] == [numbers[i] for i in order]
        assert np.allclose(entry["top_max"], smax[order, u], atol=1e-4)


def test_quantiles_exact_when_everything_fits(maxiou_run):
    model, seg, numbers, cat, tally, res = maxiou_run
    feats, _, _ = brute(model, seg, "layer3", numbers)
    assert tally.exact_quantiles and cat["quantile_method"].startswith("exact")
    qs = [float(k) for k in cat["units"][0]["quantiles"]]
    for u, entry in enumerate(cat["units"]):
        want = np.quantile(feats[:, u].ravel(), qs)
        assert np.allclose(res["quantiles"][u].numpy(), want, atol=1e-5)
        assert entry["quantile_99"] == pytest.approx(np.quantile(feats[:, u], 0.99), abs=1e-4)


def test_quantiles_sampled_within_stated_rank_error():
    # 40 images x 64 positions = 2,560 values per unit, sample of 1,000 (25 per image). Tolerance:
    # a rank error of 4 standard errors sqrt(q(1-q)/n) plus 5/n (the 0.999 level sits near the
    # sample's maximum, where interpolation between order statistics is coarse).
    model = tiny_model()
    numbers = list(range(40))
    cat, tally, res = _dissect(model, FakeSegmenter(), "layer3", numbers, batch_size=16,
                               quantile_sample=1024)
    assert not tally.exact_quantiles and cat["quantile_method"].startswith("sampled")
    n = res["sample_size"]
    assert n == 40 * (1024 // 40)
    feats = model.features(model.sample_z(numbers), "layer3").double().numpy()
    qs = np.array([float(k) for k in cat["units"][0]["quantiles"]])
    for u in range(feats.shape[1]):
        values = np.sort(feats[:, u].ravel())
        rank = np.searchsorted(values, res["quantiles"][u].numpy()) / len(values)
        tol = 4 * np.sqrt(qs * (1 - qs) / n) + 5 / n
        assert (np.abs(rank - qs) <= tol).all(), (u, rank, qs)


def test_top1_protocol_threshold_is_the_upsampled_99_quantile():
    model = tiny_model()
    seg = FakeSegmenter()
    numbers = list(range(30))
    cat, tally, res = _dissect(model, seg, "layer3", numbers, protocol="top1", batch_size=16)
    assert cat["protocol"] == "top1" and res["thresholds"].shape[1] == 1
    _, up, labels = brute(model, seg, "layer3", numbers)
    for u, entry in enumerate(cat["units"]):
        values = up[:, u].ravel()
        t = float(res["thresholds"][u, 0])
        level = (values < t).mean()
        assert abs(level - 0.99) < 0.005 and entry["level"] == pytest.approx(level, abs=2e-4)
        m = up[:, u] >= t
        ious = []
        for k in range(3):
            i = (m & (labels == k)).sum()
            ious.append(i / (m.sum() + (labels == k).sum() - i))
        assert entry["label"] == seg.concepts[int(np.argmax(ious))]
        assert entry["iou"] == pytest.approx(max(ious), abs=1e-3)


def test_iqr_protocol_labels_by_information_and_is_chance_free():
    model = tiny_model()
    seg = FakeSegmenter()
    numbers = list(range(24))
    cat, tally, res = _dissect(model, seg, "layer3", numbers, protocol="iqr", batch_size=12)
    assert cat["protocol"] == "iqr" and cat["ranked_by"] == "iqr" and cat["iqr_threshold"] == 0.01
    iqr, iou = res["iqr"].numpy(), res["iou"].numpy()
    for u, entry in enumerate(cat["units"]):
        best = iqr[u].max(0)                                             # per concept
        k = int(best.argmax())
        li = int(iqr[u, :, k].argmax())
        assert entry["label"] == seg.concepts[k]
        assert entry["iqr"] == pytest.approx(best[k], abs=1e-5)
        assert entry["iou"] == pytest.approx(iou[u, li, k], abs=1e-4)
        assert entry["threshold"] == pytest.approx(float(res["thresholds"][u, li]), abs=1e-4)
        assert entry["interpretable"] == (iou[u, li, k] > 0.04 and best[k] > 0.01)
    for k, c in enumerate(seg.concepts):
        ranked = [e["iqr"] for e in cat["concepts"][c]]
        assert ranked == sorted(ranked, reverse=True)
    # a unit mask independent of the concept has IQR ~0 but a large chance IoU
    t = Tally(1, 2, (1, 1), (2, 2), 4000, levels=MAXIOU_LEVELS, bins=64)
    g = torch.Generator().manual_seed(0)
    for i in range(0, 4000, 500):
        t.update(torch.randn(500, 1, 1, 1, generator=g), torch.randint(0, 2, (500, 2, 2), generator=g),
                 range(i, i + 500))
    r = t.finish()
    assert r["iqr"].max() < 0.002 and r["iou"].max() > 0.3 and r["iou_chance"].max() > 0.3


def test_segmentation_smaller_than_the_image():
    model = tiny_model()
    cat = dissect(model, FakeSegmenter(stride=2), "layer5", "0-9", batch_size=5)
    assert cat["seg_size"] == [8, 8] and cat["feature_shape"] == [4, 16, 16]


# ----------------------------------------------------------------------------- the tally itself
def test_tally_grid_grows_and_counts_stay_exact():
    # a second batch reaching 50x past the first batch's range doubles the grid (merging bins)
    g = torch.Generator().manual_seed(3)
    feats = [torch.randn(4, 3, 2, 2, generator=g), 50 * torch.rand(4, 3, 2, 2, generator=g)]
    segs = [torch.randint(0, 2, (4, 6, 6), generator=g) for _ in range(2)]
    t = Tally(3, 2, (2, 2), (6, 6), 8, levels=MAXIOU_LEVELS, top_k=3, bins=256)
    t.update(feats[0], segs[0], range(4))
    before = t.width.clone()
    t.update(feats[1], segs[1], range(4, 8))
    assert t.doublings > 0 and (t.width > before).all()
    res = t.finish()
    up = torch.cat([upsample(f, (6, 6)) for f in feats]).double().numpy()
    lab = torch.cat(segs).numpy()
    for u in range(3):
        assert up[:, u].max() < float(t.lo[u] + t.bins * t.width[u])    # nothing clipped at the top
        for li in range(len(MAXIOU_LEVELS)):
            m = up[:, u] >= float(res["thresholds"][u, li])
            assert abs(int(res["active"][u, li]) - m.sum()) <= 1
            for k in range(2):
                assert abs(int(res["inter"][u, li, k]) - (m & (lab == k)).sum()) <= 1


def test_memory_is_bounded_by_the_budget_not_n():
    model = tiny_model()
    sizes = {}
    for n in (8, 40):
        _, tally, _ = _dissect(model, FakeSegmenter(), "layer3", list(range(n)), batch_size=8,
                               quantile_sample=256, bins=128, top_k=4)
        sizes[n] = {k: tuple(v.shape) for k, v in tally.state_tensors().items()}
        assert tally.sample.numel() <= 8 * 256                      # units x budget
        assert tally.nbytes() <= 8 * 3 * 128 * 8 + 8 * 256 * 4 + 8 * 4 * 16 + 8 * 3 * 8 + 3 * 8
        sizes[n].update({f"work_{k}": tuple(v.shape) for k, v in tally.workspace_tensors().items()})
        assert tally.nbytes(workspace=True) - tally.nbytes() <= 16 * 8 * 8 * 16 * 16  # units x batch x H x W
    for key in ("hist", "concept_pixels", "concept_sums", "top_values", "top_numbers",
                "work_t", "work_y", "work_i"):
        assert sizes[8][key] == sizes[40][key]
    assert sizes[40]["sample"][1] <= sizes[8]["sample"][1]


# ----------------------------------------------------------------------------- catalogs
def test_catalog_round_trip_and_mismatches(tmp_path, maxiou_run):
    model, seg, numbers, cat, tally, res = maxiou_run
    path = save_catalog(cat, tmp_path / "catalog" / "layer3.json")
    back = load_catalog(path, model=model, layer="layer3")
    assert back == json.loads(json.dumps(cat))
    assert back["format"] == FORMAT and back["version"] == 1
    assert not list((tmp_path / "catalog").glob(".*tmp"))             # atomic write left nothing
    with pytest.raises(ValueError, match="catalog is for layer layer3 but layer layer4"):
        load_catalog(path, layer="layer4")
    other = tiny_model(sizes=(8, 8, 6, 4))
    with pytest.raises(ValueError, match="catalog is for layer layer3 with 8 units but the "
                                         "model's layer has 6"):
        load_catalog(path, model=other)
    short = tiny_model(sizes=(8, 8))
    with pytest.raises(LayerError, match="unknown layer 'layer3'"):
        load_catalog(path, model=short)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="malformed JSON"):
        load_catalog(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a dissection catalog"):
        load_catalog(bad)
    bad.write_text(json.dumps({**cat, "version": 99}))
    with pytest.raises(ValueError, match="newer"):
        load_catalog(bad)
    bad.write_text(json.dumps({**cat, "units": cat["units"][:3]}))
    with pytest.raises(ValueError, match="3 unit entries"):
        load_catalog(bad)
    with pytest.raises(ValueError, match="no such catalog"):
        load_catalog(tmp_path / "missing.json")


def test_catalog_stays_small_for_256_units_and_11_concepts():
    class Seg11:
        concepts = [f"c{i}" for i in range(11)]

        def segment(self, images):
            return ((images[:, 0] + 1) * 5.5).clamp(0, 10).long()
    model = tiny_model(sizes=(8, 256, 8))                             # 8 px, 256 units at 4x4
    cat = dissect(model, Seg11(), "layer2", 16, batch_size=16, bins=64)
    text = _dumps(cat)
    assert len(cat["units"]) == 256 and len(text) < 1_000_000, len(text)
    assert json.loads(text) == json.loads(json.dumps(cat))


def test_summary_table_and_layer_chart(tmp_path, maxiou_run):
    cat = maxiou_run[3]
    table = summary_table(cat)
    assert "layer3" in table and all(c in table for c in cat["concept_list"])
    assert "interpretable" in table and "its IoU" in table and "IoU > 0.04" in table
    other = {**cat, "layer": "layer4", "interpretable": {"other": 2, "red": 1, "green": 0}}
    path = layer_chart([cat, other], tmp_path / "layers.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size[0] > 200 and im.size[1] > 200
        px = np.asarray(im)
    assert (px != 255).any()
    with pytest.raises(ValueError):
        layer_chart([], tmp_path / "none.png")


def test_compact_numbers():
    assert compact_numbers([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert compact_numbers([3]) == "3"


def test_stylegan2_layer_and_catalog_check(tmp_path):
    from conftest import make_stylegan2
    g = make_stylegan2()
    model = core.load_model(Bundle(None, {"name": "sg2", "architecture": "stylegan2"}, g))
    layer = model.layers[2]
    cat = dissect(model, FakeSegmenter(), layer, 6, batch_size=3)
    assert cat["feature_shape"][0] == g.layer_channels(layer) == len(cat["units"])
    assert cat["noise"] == "buffers" and cat["truncation"] == 1.0
    load_catalog(save_catalog(cat, tmp_path / f"{layer}.json"), model=model, layer=layer)


# ----------------------------------------------------------------------------- overlay
def test_unit_overlay_dims_outside_and_outlines_the_mask():
    image = torch.zeros(3, 16, 16)                                    # bytes 127
    act = torch.zeros(4, 4)
    act[1:3, 1:3] = 1.0
    out = unit_overlay(image, act, 0.5)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    mask = (upsample(act, (16, 16)) > 0.5).numpy()
    assert mask.any() and not mask.all()
    assert (out[~mask] == 63).all()                                   # 127 * 0.5, truncated
    yellow = (out == (255, 255, 0)).all(-1)
    assert yellow.any() and not (yellow & ~mask).any()
    inner = mask.copy()
    inner[1:-1, 1:-1] = (mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1]
                         & mask[1:-1, :-2] & mask[1:-1, 2:])
    assert (yellow == (mask & ~inner)).all()
    assert (out[inner & mask] == 127).all()
    full = unit_overlay(image, torch.ones(4, 4), 0.5)                  # image edge is no border
    assert (full == 127).all()


def test_top_images_regenerates_the_catalog_top_with_overlays(maxiou_run):
    from core.dissect import top_images
    model, seg, numbers, cat, tally, res = maxiou_run
    shots = top_images(model, cat, 2, count=3)
    assert [n for n, _ in shots] == cat["units"][2]["top"][:3]
    z = model.sample_z([shots[0][0]])
    want = unit_overlay(model.generate(z)[0], model.features(z, "layer3")[0, 2],
                        cat["units"][2]["threshold"])
    assert shots[0][1].shape == (16, 16, 3) and np.array_equal(shots[0][1], want)


# ----------------------------------------------------------------------------- callbacks, bad input
def test_progress_and_stop():
    model = tiny_model()
    calls = []
    dissect(model, FakeSegmenter(), "layer2", 10, batch_size=4,
            progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 10), (4, 10), (8, 10), (10, 10)]
    seen = []

    def stop():
        seen.append(1)
        return len(seen) > 1
    with pytest.raises(DissectionStopped, match="after 4 of 10"):
        dissect(model, FakeSegmenter(), "layer2", 10, batch_size=4, stop=stop)


def test_bad_inputs():
    model = tiny_model()
    seg = FakeSegmenter()
    with pytest.raises(LayerError, match="unknown layer 'layer9'"):
        dissect(model, seg, "layer9", 4)
    with pytest.raises(ValueError, match="this model has no segmenter; catalogs from elsewhere"):
        dissect(model, None, "layer2", 4)
    with pytest.raises(ValueError, match=">= 1"):
        dissect(model, seg, "layer2", 0)
    with pytest.raises(ValueError, match="no image numbers"):
        dissect(model, seg, "layer2", [])
    with pytest.raises(ValueError, match="protocol"):
        dissect(model, seg, "layer2", 4, protocol="netdissect")
    with pytest.raises(ValueError, match="batch_size"):
        dissect(model, seg, "layer2", 4, batch_size=0)

    class OutOfRange(FakeSegmenter):
        def segment(self, images):
            return super().segment(images) + 1
    with pytest.raises(ValueError, match="labels must lie in 0..2"):
        dissect(model, OutOfRange(), "layer2", 4)


# ----------------------------------------------------------------------------- CLI
@pytest.fixture
def bundle_with_segmenter(progan_bundle):
    from core.segmenter import Segmenter, ToySegNet, save_segmenter
    torch.manual_seed(0)
    concepts = ["sky", "tree", "wall"]
    net = ToySegNet(len(concepts), width=4)
    config = {"architecture": "toyseg", "concepts": concepts, "kwargs": {"width": 4},
              "id": "toyseg-test", "palette": [[0, 0, 255], [0, 160, 0], [200, 200, 200]]}
    save_segmenter(Segmenter(net, concepts, config["palette"], config), progan_bundle)
    return progan_bundle


def test_cli_dissect_one_layer(bundle_with_segmenter, capsys):
    code = cli.main(["dissect", str(bundle_with_segmenter), "--layer", "layer3", "--samples", "12",
                     "--batch-size", "5", "--top-k", "3"])
    out = capsys.readouterr().out
    assert code == 0
    path = bundle_with_segmenter / "catalog" / "layer3.json"
    cat = load_catalog(path, model=core.load_model(bundle_with_segmenter), layer="layer3")
    assert cat["samples"] == 12 and cat["segmenter"] == "toyseg-test" and cat["model"] == "tiny-progan"
    assert cat["concept_list"] == ["sky", "tree", "wall"] and len(cat["units"][0]["top"]) == 3
    assert "its IoU" in out and "wrote" in out and str(path) in out


def test_cli_dissect_all_layers(bundle_with_segmenter, tmp_path, capsys):
    out_dir = tmp_path / "cats"
    code = cli.main(["dissect", str(bundle_with_segmenter), "--layer", "all", "--images", "0-5",
                     "--out", str(out_dir), "--protocol", "top1"])
    out = capsys.readouterr().out
    assert code == 0
    layers = core.load_model(bundle_with_segmenter).layers
    assert sorted(p.stem for p in out_dir.glob("*.json")) == sorted(layers)
    assert all(json.loads((out_dir / f"{l}.json").read_text())["protocol"] == "top1" for l in layers)
    with Image.open(out_dir / "layers.png") as im:
        assert im.format == "PNG"
    assert all(l in out for l in layers) and "layers.png" in out


def test_cli_dissect_errors(progan_bundle, bundle_with_segmenter, capsys):
    assert cli.main(["dissect", str(progan_bundle / "nope"), "--layer", "layer3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert cli.main(["dissect", str(bundle_with_segmenter), "--layer", "layer99",
                     "--samples", "2"]) == 2
    assert "unknown layer 'layer99'" in capsys.readouterr().err
    assert cli.main(["dissect", str(bundle_with_segmenter), "--layer", "layer2",
                     "--samples", "0"]) == 2
    assert "--samples must be >= 1" in capsys.readouterr().err


def test_cli_dissect_without_segmenter(progan_bundle, capsys):
    assert cli.main(["dissect", str(progan_bundle), "--layer", "layer2", "--samples", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no segmenter" in err[0]
    assert not (progan_bundle / "catalog").exists()


def test_concept_homes_point_to_the_layer_with_the_best_unit():
    from core.dissect import concept_homes
    cat = lambda ranking, counts: {"concepts": ranking, "interpretable": counts}   # noqa: E731
    homes = concept_homes({
        "layer4": cat({"tree": [{"unit": 1, "iou": 0.2}], "dome": [{"unit": 2, "iou": 0.05}]}, {"tree": 3}),
        "layer8": cat({"tree": [{"unit": 5, "iou": 0.1}], "dome": [{"unit": 0, "iou": 0.02}, {"unit": 7, "iou": 0.15}]},
                      {"dome": 2}),
        "layer9": cat({"sky": []}, {})})
    assert homes == {"tree": ("layer4", 0.2, 3), "dome": ("layer8", 0.15, 2)}
