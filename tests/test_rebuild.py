"""training/rebuild.py: the evaluations' headline numbers reach the bundle's config and card."""
import json
import shutil
from pathlib import Path

from training.rebuild import PRESET_EVALS, collect_metrics, steps

ROOT = Path(__file__).resolve().parent.parent


def test_collect_metrics_copies_every_evaluation(tmp_path):
    bundle = tmp_path / "toytown"
    bundle.mkdir()
    for name in ("config.json", "generator.safetensors", "segmenter.json"):
        shutil.copy(ROOT / "models/toytown" / name, bundle / name)
    shutil.copytree(ROOT / "models/toytown/rules", bundle / "rules")
    (bundle / "catalog").mkdir()
    shutil.copy(ROOT / "models/toytown/catalog/layer6.json", bundle / "catalog/layer6.json")
    config = json.loads((bundle / "config.json").read_text())
    config["metrics"] = {"quality": {"fsd": 1.0}}                 # finalize's part is kept
    (bundle / "config.json").write_text(json.dumps(config))
    metrics = collect_metrics(bundle, ROOT / "docs/eval")
    evals = {p.stem: json.loads(p.read_text()) for p in (ROOT / "docs/eval").glob("*.json")}
    assert metrics["quality"] == {"fsd": 1.0}
    assert metrics["interventions"]["watermark_rate_after"] == evals["interventions"]["watermark_rate_after"]
    assert set(metrics["interventions"]["insertion_rise"]) == set(evals["interventions"]["insertion_rise"])
    assert metrics["photo_renders"]["images"] == len(evals["photo_renders"]["rows"])
    for name in PRESET_EVALS:
        ours = evals[f"rewrite_{name}"]["results"]["ours"]
        assert metrics[f"rewrite_{name}"]["ours"]["removal"] == round(ours["removal"], 4)
    assert "erased" in metrics["rewrite_erase_watermarks"]["note"]
    assert metrics["rewrite_erase_watermarks"]["target"] is None
    assert (metrics["rewrite_domes_to_spires"]["source"], metrics["rewrite_domes_to_spires"]["target"]) \
        == ("dome", "spire")
    config = json.loads((bundle / "config.json").read_text())
    assert config["metrics"] == metrics
    layer6 = json.loads((bundle / "catalog/layer6.json").read_text())
    assert config["best_unit_iou"]["grass"] == [max(round(u["concept_iou"].get("grass", 0), 3)
                                                    for u in layer6["units"]), "layer6"]
    card = (bundle / "README.md").read_text()
    assert "rewrite_domes_to_spires" in card
    assert "## Toytown 1 and this model" in card and "| best unit IoU: dome | 0.07 (layer3) |" in card


def test_steps_are_named_once():
    names = [n for n, _ in steps()]
    assert len(names) == len(set(names)) and names[0] == "checkpoint" and names[-1] == "metrics"
