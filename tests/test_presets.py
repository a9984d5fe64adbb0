"""Rule presets chosen from segmentations (training/presets.py), on synthetic label maps."""
from types import SimpleNamespace

import numpy as np
import pytest

from core import rules
from training.presets import copy_paste_rule, erase_rule

CONCEPTS = ["sky", "tree", "spire", "watermark"]
SEG = SimpleNamespace(concept_index=CONCEPTS.index)
MODEL = SimpleNamespace(bundle=SimpleNamespace(name="toy"))


def _labels():
    lab = np.zeros((6, 16, 16), np.uint8)
    lab[0, 2:8, 3:6] = 2            # the biggest spire
    lab[1, 2:5, 10:14] = 2          # a smaller one
    lab[2, 9:12, 1:4] = 1           # a 9-pixel tree
    lab[3, 4:10, 4:10] = 1          # a 36-pixel tree
    lab[3, 0:1, 0:3] = 2            # too small to be a context
    lab[4, 14:16, :] = 3            # a watermark bar
    lab[5, 15:16, :8] = 3
    return lab


def test_spires_to_trees_rule():
    numbers = [10, 11, 12, 13, 14, 15]
    rule = copy_paste_rule(MODEL, _labels(), numbers, "spire", "tree", SEG, "layer4", contexts=3)
    assert [n for n, _ in rule.key] == [10, 11]                  # largest spire regions first
    # paste over the biggest spire; copy the tree closest in size to it (9 px beats 36 px for 18)
    assert rule.paste[0] == 10 and rule.object[0] == 12
    # masks cover their region grown by one pixel and nothing far away
    m = rule.key[0][1]
    assert m[2:8, 3:6].min() == 1 and m[1, 2] == 1 and m[12:, :].max() == 0
    text = rules.write_rule(rule)
    back = rules.read_rule(text)
    assert back.layer == "layer4" and back.model == "toy" and not back.erase


def test_erase_rule_and_missing_concept():
    rule = erase_rule(MODEL, _labels(), list(range(6)), "watermark", SEG, "layer5", contexts=4)
    assert rule.erase and rule.object is None and [n for n, _ in rule.key] == [4, 5]
    with pytest.raises(SystemExit, match="clear sky"):
        copy_paste_rule(MODEL, np.ones((3, 8, 8), np.uint8), [0, 1, 2], "sky", "tree", SEG,
                        "layer4", contexts=3)


def test_choose_layer_keeps_the_most_effective_layer_and_rank(monkeypatch):
    import core.eval.rewrite
    import training.presets as presets
    measured = {("layer4", 1): 0.1, ("layer4", 2): 0.3, ("layer5", 1): 0.2, ("layer5", 2): 0.25}
    seen = []

    def fake_eval(model, seg, rule, images, source_concept=None, target_concept=None, C=None,
                  methods=()):
        assert (source_concept, target_concept) == ("spire", "tree")
        seen.append((rule.layer, rule.rank, images, methods))
        return {"ours": {"effectiveness": measured[rule.layer, rule.rank], "generality": 0.5,
                         "collateral_clean": 0.01, "collateral_outside": 0.02}}

    monkeypatch.setattr(core.eval.rewrite, "evaluate_rewrite", fake_eval)
    monkeypatch.setattr(presets, "ensure_stats", lambda model, layer: None)
    layer, rank, table = presets.choose_layer(MODEL, SEG, _labels(), list(range(6)),
                                              ["layer4", "layer5"], [1, 2], contexts=3)
    assert (layer, rank) == ("layer4", 2) and len(table) == 4
    # measured on the validation images, never the evaluation's 100000+, with our method only
    assert {s[2] for s in seen} == {presets.VALIDATION_IMAGES} and {s[3] for s in seen} == {("ours",)}


def test_presets_are_listed_in_the_bundles_order(tmp_path):
    from types import SimpleNamespace

    from demos.rewrite_session import preset_paths
    (tmp_path / "rules").mkdir()
    for name in ("a_rule", "domes_to_spires", "spires_to_trees"):
        (tmp_path / "rules" / f"{name}.json").write_text("{}")
    model = SimpleNamespace(layers=["layer1", "layer2"], bundle=SimpleNamespace(path=tmp_path, config={
        "presets": ["spires_to_trees", "domes_to_spires", 3]}))
    assert list(preset_paths(model)) == ["spires_to_trees", "domes_to_spires", "a_rule"]
    model.bundle.config = {}
    assert list(preset_paths(model)) == ["a_rule", "domes_to_spires", "spires_to_trees"]


def test_preset_note_states_what_the_preset_measured():
    from types import SimpleNamespace

    from demos.rewrite_session import preset_note
    metrics = {"rewrite_a": {"source": "spire", "target": "tree", "ours": {
                   "effectiveness": 0.26, "generality": 0.73, "collateral_outside": 0.056}},
               "rewrite_b": {"source": "watermark", "target": None, "ours": {
                   "effectiveness": None, "removal": 0.95, "collateral_outside": 0.082}}}
    model = SimpleNamespace(bundle=SimpleNamespace(config={"metrics": metrics}))
    assert preset_note(model, "a") == ("Measured on held-out samples: 26% of spire pixels became "
                                       "tree, 73% of the images with a spire gained some; mean "
                                       "change elsewhere 0.056 (of 1).")
    assert "95% of watermark pixels were removed" in preset_note(model, "b")
    metrics["rewrite_a"]["ours"]["collateral_clean"] = 0.047     # also in images without a spire
    assert preset_note(model, "a").endswith("change elsewhere 0.056 (of 1), in images without a "
                                            "spire 0.047.")
    assert preset_note(model, "c") == "" and preset_note(SimpleNamespace(), "a") == ""
