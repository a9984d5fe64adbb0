"""core.paint: feature masks, catalog look-ups, paint edits, causal ranking, removal helpers."""
import json

import numpy as np
import pytest
import torch

from conftest import make_progan, make_stylegan2
from core.edits import EditStack, Renderer, UnitEdit
from core.paint import (CatalogError, ablation_effects, causal_ranking, draw_values, feature_mask,
                        load_catalog, paint_edit, remove_units_edit, units_for, watermark_rate)


class RedSegmenter:
    """Fake segmenter: 'red' where the red channel is above a threshold, else 'other'."""
    concepts = ["other", "red"]

    def __init__(self, threshold=0.0):
        self.threshold = threshold
        self.calls = 0

    def concept_index(self, name):
        if name not in self.concepts:
            raise ValueError(f"unknown concept {name!r}")
        return self.concepts.index(name)

    def segment(self, images):
        self.calls += 1
        return (images[:, 0] > self.threshold).long()


CATALOG = {
    "layer": "layer4",
    "units": [{"unit": u, "label": "tree" if u in (1, 2, 5) else "sky" if u == 3 else "-",
               "iou": [0.0, 0.3, 0.2, 0.5, 0.0, 0.1, 0.0, 0.0][u], "threshold": 1.0,
               "quantile_99": 10.0 + u, "top": [0, 1]} for u in range(8)],
    "concepts": {"tree": [{"unit": 1, "iou": 0.3}, {"unit": 2, "iou": 0.2}, {"unit": 5, "iou": 0.1}],
                 "sky": [{"unit": 3, "iou": 0.5}]},
    "concept_list": ["tree", "sky", "door"],
    "causal": {"tree": [{"unit": 5, "effect": 0.4}, {"unit": 1, "effect": 0.2},
                        {"unit": 7, "effect": 0.1}]},
    "draw_values": {"sky": [0.5 * u for u in range(8)]},
    "something_new": {"ignored": True},
}


# ------------------------------------------------------------------ masks
def test_feature_mask_max_pools_bool_masks():
    m = np.zeros((16, 16), bool)
    m[3, 13] = True
    fm = feature_mask(m, (8, 8))
    assert fm.shape == (8, 8) and fm.dtype == torch.float32
    assert fm[1, 6] == 1 and fm.sum() == 1


def test_feature_mask_empty_is_zeros_and_mean_pooling():
    assert torch.equal(feature_mask(torch.zeros(16, 16), 4), torch.zeros(4, 4))
    m = torch.zeros(16, 16)
    m[:4, :2] = 1.0
    assert feature_mask(m, (4, 4), pooling="mean")[0, 0] == 0.5
    assert feature_mask(m, (4, 4))[0, 0] == 1.0
    assert feature_mask(np.full((16, 16), 255, np.uint8), 2).eq(1).all()   # integers: nonzero = on


def test_feature_mask_bad_inputs():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        feature_mask(torch.full((4, 4), 2.0), 2)
    with pytest.raises(ValueError, match="NaN"):
        feature_mask(torch.full((4, 4), float("nan")), 2)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        feature_mask(torch.ones(2, 4, 4), 2)
    with pytest.raises(ValueError, match="pooling"):
        feature_mask(torch.ones(4, 4), 2, pooling="median")


# ------------------------------------------------------------------ catalogs
def test_units_for_causal_iou_and_fallbacks():
    assert units_for(CATALOG, "tree", 2) == [5, 1]                   # causal ranking
    assert units_for(CATALOG, "tree", 10) == [5, 1, 7]
    assert units_for(CATALOG, "tree", 2, ranking="iou") == [1, 2]
    assert units_for(CATALOG, "sky", 4) == [3]                        # no causal -> IoU
    cat = {"layer": "layer4", "units": CATALOG["units"]}              # only per-unit labels
    assert units_for(cat, "tree", 5) == [1, 2, 5]


def test_units_for_unsorted_causal_entries_are_ranked_by_effect():
    cat = {"causal": {"tree": [{"unit": 1, "effect": 0.1}, {"unit": 2, "effect": 0.3}]}}
    assert units_for(cat, "tree", 2) == [2, 1]
    assert units_for(cat, "tree", 2, "specific") == [2, 1]            # no collateral: causal order


def test_specific_ranking_is_effect_per_collateral():
    cat = {"causal": {"wm": [{"unit": 1, "effect": 0.004, "collateral": 0.07},     # 0.05
                             {"unit": 2, "effect": 0.003, "collateral": 0.02},     # 0.1
                             {"unit": 3, "effect": 0.001, "collateral": 0.0}]}}    # 0.1
    assert units_for(cat, "wm", 3) == [1, 2, 3]
    assert units_for(cat, "wm", 3, "specific") == [2, 3, 1]       # ties keep the causal order


def test_concept_without_units_is_a_clear_error():
    with pytest.raises(CatalogError, match=r"concept 'door' has no units.*concepts with units: "
                                           r"tree, sky"):
        units_for(CATALOG, "door", 4)
    with pytest.raises(CatalogError, match="no units"):
        paint_edit(CATALOG, "layer4", "unicorn", None)
    with pytest.raises(ValueError, match="ranking"):
        units_for(CATALOG, "tree", 4, ranking="ace")


def test_draw_values_quantile_or_conditional_mean():
    assert draw_values(CATALOG, "tree", [5, 1]) == [15.0, 11.0]      # quantile_99
    assert draw_values(CATALOG, "sky", [3, 4]) == [13.0, 14.0]
    assert draw_values(CATALOG, "sky", [3, 4], "mean") == [1.5, 2.0]
    assert draw_values(CATALOG, "tree", [5, 1], "mean") == [15.0, 11.0]   # no table: the quantile
    cat = dict(CATALOG, draw_values={"tree": {"5": 2.5, "1": 0.5}})
    assert draw_values(cat, "tree", [5, 1], "mean") == [2.5, 0.5]
    with pytest.raises(ValueError, match="value must be"):
        draw_values(CATALOG, "tree", [5], "median")
    with pytest.raises(CatalogError, match="no draw value for units"):
        draw_values({"units": [{"unit": 0}]}, "tree", [0])


def test_paint_edit_draw_and_remove():
    mask = torch.zeros(8, 8)
    mask[2:4, 2:4] = 1
    e = paint_edit(CATALOG, "layer4", "tree", mask, mode="draw", n_units=2)
    assert isinstance(e, UnitEdit)
    assert e.units == (5, 1) and e.values == (15.0, 11.0) and e.label == "draw tree"
    assert torch.equal(e.mask, mask)
    r = paint_edit(CATALOG, "layer4", "tree", mask, mode="remove", n_units=3, ranking="iou")
    assert r.units == (1, 2, 5) and r.values is None and r.label == "remove tree"
    with pytest.raises(ValueError, match="mode"):
        paint_edit(CATALOG, "layer4", "tree", mask, mode="erase")
    with pytest.raises(CatalogError, match="not 'layer3'"):
        paint_edit(CATALOG, "layer3", "tree", mask)


def test_paint_changes_features_only_inside_the_mask():
    g = make_progan()
    z = g.sample_z(range(2))
    m = np.zeros((16, 16), bool)
    m[:4, :4] = True                                      # top-left 2x2 cells at 8x8
    e = paint_edit(CATALOG, "layer4", "tree", feature_mask(m, (8, 8)), n_units=3)
    x = g.features(z, "layer4")
    y = EditStack().push(e).feature_edit()("layer4", x)
    changed = (y != x).any(dim=(0, 1))
    assert changed[:2, :2].all() and not changed[2:].any() and not changed[:, 2:].any()
    assert e.units == (5, 1, 7)
    assert torch.equal(y[:, [0, 2, 3, 4, 6]], x[:, [0, 2, 3, 4, 6]])
    assert torch.allclose(y[:, 5, :2, :2], torch.full((2, 2, 2), 15.0))


def test_empty_brush_stroke_renders_unchanged():
    g = make_progan()
    z = g.sample_z([0])
    e = paint_edit(CATALOG, "layer4", "tree", feature_mask(np.zeros((16, 16)), (8, 8)))
    assert e.is_noop
    assert torch.equal(Renderer(g).render(z, EditStack().push(e)), g.generate(z))


def test_load_catalog_from_bundle_model_and_file(progan_bundle):
    import core
    (progan_bundle / "catalog").mkdir()
    path = progan_bundle / "catalog" / "layer4.json"
    path.write_text(json.dumps(CATALOG))
    model = core.load_model(progan_bundle)
    assert load_catalog(model, "layer4")["concepts"] == CATALOG["concepts"]
    assert load_catalog(progan_bundle, "layer4")["layer"] == "layer4"
    assert load_catalog(path)["concept_list"] == CATALOG["concept_list"]
    with pytest.raises(CatalogError, match="no catalog"):
        load_catalog(model, "layer3")
    with pytest.raises(CatalogError, match="not 'layer2'"):
        load_catalog(path, "layer2")
    path.write_text("{broken")
    with pytest.raises(CatalogError, match="malformed JSON"):
        load_catalog(model, "layer4")


# ------------------------------------------------------------------ causal ranking
def _share_after(g, seg, z, units, layer):
    stack = EditStack().push(remove_units_edit(layer, units)) if units else EditStack()
    images = Renderer(g).render(z, stack)
    return (seg.segment(images) == 1).float().mean().item()


@pytest.mark.parametrize("family", ["progan", "stylegan2"])
def test_causal_ranking_matches_brute_force_ablation(family):
    g = make_progan() if family == "progan" else make_stylegan2()
    seg = RedSegmenter()
    numbers = [0, 1, 2]
    z = g.sample_z(numbers)
    ranked = causal_ranking(g, seg, "layer4", "red", numbers, batch_size=6)
    assert sorted(r["unit"] for r in ranked) == list(range(8))
    effects = [r["effect"] for r in ranked]
    assert effects == sorted(effects, reverse=True)
    base = _share_after(g, seg, z, [], "layer4")
    for r in ranked:
        assert r["effect"] == pytest.approx(base - _share_after(g, seg, z, [r["unit"]], "layer4"),
                                            abs=1e-6)
    assert any(r["effect"] != 0 for r in ranked)
    # batching does not change the answer; candidates restrict the work
    one = causal_ranking(g, seg, "layer4", "red", numbers, candidate_units=[6, 2], batch_size=1)
    by_unit = {r["unit"]: r["effect"] for r in ranked}
    assert {r["unit"] for r in one} == {2, 6}
    for r in one:
        assert r["effect"] == pytest.approx(by_unit[r["unit"]], abs=1e-6)


def test_causal_ranking_reuses_the_head_and_batches_units():
    g = make_progan()
    seg = RedSegmenter()
    causal_ranking(g, seg, "layer4", "red", [0, 1], batch_size=8)
    # 2 images per batch -> 4 units per tail batch: 1 base + 2 unit batches
    assert seg.calls == 3


def test_ablation_effects_sets_and_errors():
    g = make_progan()
    seg = RedSegmenter()
    res = ablation_effects(g, seg, "layer4", "red", "0-3", [[], [0, 1, 2], list(range(8))])
    assert res["shares"][0] == pytest.approx(res["base"])
    assert len(res["per_image"][1]) == 4
    z = g.sample_z(range(4))
    assert res["shares"][1] == pytest.approx(_share_after(g, seg, z, [0, 1, 2], "layer4"), abs=1e-6)
    # collateral: mean |Δpixel| outside the concept's pixels of the unedited images
    assert res["collateral"][0] == 0
    before, after = (Renderer(g).render(z, EditStack().push(remove_units_edit("layer4", u)) if u
                                        else EditStack()) for u in ([], [0, 1, 2]))
    outside = seg.segment(before) != 1
    want = (after - before).abs().mean(1)[outside].mean().item()
    assert res["collateral"][1] == pytest.approx(want, rel=1e-4, abs=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        ablation_effects(g, seg, "layer4", "red", [0], [[8]])
    with pytest.raises(ValueError, match="unknown concept"):
        causal_ranking(g, seg, "layer4", "blue", [0])


# ------------------------------------------------------------------ removal helpers
def test_watermark_rate():
    labels = torch.zeros(4, 20, 20, dtype=torch.long)
    labels[0, 0, 0:2] = 3          # 2/400 = 0.5% -> counts
    labels[1, 0, 0] = 3            # 0.25% -> does not
    labels[2] = 3
    assert watermark_rate(labels, 3) == 0.5
    assert watermark_rate(labels, 3, min_fraction=0.002) == 0.75
    assert watermark_rate(labels[:0], 3) == 0.0
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        watermark_rate(labels[0], 3)


def test_remove_units_edit():
    e = remove_units_edit("layer4", [3, 1])
    assert e.units == (3, 1) and e.values is None and e.mask is None and e.alpha == 1.0
    assert "remove 2 units" in e.label
    x = torch.randn(1, 4, 2, 2)
    out = e.apply(x)
    assert out[:, [1, 3]].eq(0).all() and torch.equal(out[:, [0, 2]], x[:, [0, 2]])


# ------------------------------------------------------------------ python -m core eval interventions
class BucketSegmenter:
    """Fake segmenter: the red channel bucketed into five concepts (every pixel gets one)."""
    concepts = ["sky", "wall", "door", "tree", "watermark"]

    def concept_index(self, name):
        return self.concepts.index(name)

    def segment(self, images):
        return torch.bucketize(images[:, 0].contiguous(), torch.tensor([-0.3, -0.1, 0.1, 0.3]))


def tiny_catalog():
    units = [{"unit": u, "label": "-", "iou": 0.0, "threshold": 1.0, "quantile_99": 3.0 + u}
             for u in range(8)]
    return {"layer": "layer4", "units": units,
            "concepts": {"tree": [{"unit": 1, "iou": 0.2}, {"unit": 4, "iou": 0.1}],
                         "door": [{"unit": 2, "iou": 0.3}, {"unit": 6, "iou": 0.1}],
                         "watermark": [{"unit": 0, "iou": 0.2}, {"unit": 3, "iou": 0.1}]},
            "causal": {"watermark": [{"unit": 7, "effect": 0.5}, {"unit": 0, "effect": 0.2}]}}


def test_evaluate_interventions_matches_direct_renders():
    from core.eval.interventions import evaluate_interventions, format_table
    g = make_progan()
    seg = BucketSegmenter()
    numbers = list(range(6))
    res = evaluate_interventions(g, seg, tiny_catalog(), numbers, layer="layer4", wm_units=2,
                                 tree_units=2, paint_units=2, concepts=("tree", "door", "dome"),
                                 batch_size=4)
    assert res["n_images"] == 6 and res["watermark_units"] == [7, 0] and res["tree_units"] == [1, 4]
    z = g.sample_z(numbers)
    r = Renderer(g)
    wm = seg.concept_index("watermark")
    before, after = seg.segment(g.generate(z)), seg.segment(
        r.render(z, EditStack().push(remove_units_edit("layer4", [7, 0]))))
    assert res["watermark_rate_before"] == pytest.approx(watermark_rate(before, wm))
    assert res["watermark_rate_after"] == pytest.approx(watermark_rate(after, wm))
    tree_after = seg.segment(r.render(z, EditStack().push(remove_units_edit("layer4", [1, 4]))))
    tree = seg.concept_index("tree")
    expect = 1 - (tree_after == tree).sum().item() / (before == tree).sum().item()
    assert res["tree_removed_fraction"] == pytest.approx(expect)
    assert res["outside_change"] >= 0
    assert set(res["insertion_rise"]) == {"tree", "door"} and "dome" in res["skipped"]
    assert res["insertion_rise"]["door"]["n"] == 6 and res["region_fraction"] == 1 / 16
    assert res["door_context_n"]["wall"] <= 6 and res["door_context_n"]["sky"] <= 6
    assert "watermark_rate_before" in format_table(res)
    json.dumps(res)


def test_cli_eval_interventions(progan_bundle, tmp_path, capsys):
    from core import __main__ as cli
    from core.segmenter import Segmenter, ToySegNet, save_segmenter
    concepts = ["sky", "wall", "door", "tree", "watermark"]
    torch.manual_seed(0)
    seg = Segmenter(ToySegNet(len(concepts), width=4), concepts,
                    config={"architecture": "toyseg", "concepts": concepts, "kwargs": {"width": 4}})
    save_segmenter(seg, progan_bundle)
    (progan_bundle / "catalog").mkdir()
    (progan_bundle / "catalog" / "layer4.json").write_text(json.dumps(tiny_catalog()))
    out = tmp_path / "ev" / "interventions.json"
    code = cli.main(["eval", "interventions", str(progan_bundle), "--images", "0-3",
                     "--out", str(out), "--quiet", "--wm-units", "2", "--concepts", "door"])
    text = capsys.readouterr().out
    assert code == 0, text
    res = json.loads(out.read_text())
    assert res["n_images"] == 4 and res["layer"] == "layer4"
    assert set(res["insertion_rise"]) == {"door"}
    assert "watermark_rate_after" in text and "door_rise_wall" in text
    assert cli.main(["eval", "interventions", str(tmp_path / "nope")]) == 2
