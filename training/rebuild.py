"""Rebuild everything the default bundle ships after its GAN changed, in order.

    python -m training.rebuild                 # all steps (about 45 min on 2 CPU cores)
    python -m training.rebuild --from encoder  # resume at a step
    python -m training.rebuild --only metrics  # just copy docs/eval/*.json into the model card

Starts from ``runs/gan/state.pt`` (``python -m training.gan``, or ``training.device_gan --merge``):
the committed compact checkpoint, the segmenter (on fresh renders), the bundle with its catalogs, causal rankings, key statistics
and quality metrics (``training.finalize``), the rule presets chosen on validation images, the
photo encoder, every evaluation on held-out images (``docs/eval/``), the samples grid, and last
the evaluations' headline numbers in the bundle's config and model card. The README's tables are
written by hand from those files.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BUNDLE = Path("models/toytown")
EVAL = Path("docs/eval")
RENDERS = Path("runs/photos")            # 8 fresh renders (seed 1001, never trained on)
REAL = Path("runs/real_photos")          # photographs from gradio's media assets
REAL_NAMES = ("tower.jpg", "lion.jpg", "cheetah.jpg")
REWRITE_KEYS = ("seconds", "effectiveness", "generality", "collateral_clean", "collateral_outside",
                "removal", "rate_before", "rate_after")
PRESET_EVALS = {"spires_to_trees": [], "domes_to_spires": ["--source-concept", "dome",
                                                           "--target-concept", "spire"],
                "erase_watermarks": ["--source-concept", "watermark"]}


def write_photos() -> None:
    from training.toytown import render_batch
    from PIL import Image
    RENDERS.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(render_batch(1001, 8)[0]):
        Image.fromarray(im).save(RENDERS / f"render_{i}.png")
    import gradio
    assets = Path(gradio.__file__).parent / "media_assets" / "images"
    REAL.mkdir(parents=True, exist_ok=True)
    for name in REAL_NAMES:
        if (assets / name).is_file():
            shutil.copy(assets / name, REAL / name)


def _round(v):
    return round(v, 4) if isinstance(v, float) else v


def best_unit_iou(bundle: Path, layer: str | None = None) -> dict:
    """{concept: [best unit IoU, layer]} over the bundle's catalogs (or one layer's)."""
    from training.quality import best_concept_iou
    paths = sorted((bundle / "catalog").glob(f"{layer or 'layer*'}.json"))
    return best_concept_iou(json.loads(p.read_text()) for p in paths)


def collect_metrics(bundle: Path = BUNDLE, eval_dir: Path = EVAL) -> dict:
    """The headline numbers of ``eval_dir``'s JSON files into the bundle config's ``metrics``
    (kept: the quality metrics finalize wrote), then the model card."""
    from training.build_bundle import write_card
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    metrics = config.setdefault("metrics", {})
    iv = eval_dir / "interventions.json"
    if iv.exists():
        d = json.loads(iv.read_text())
        metrics["interventions"] = {
            **{k: _round(d[k]) for k in ("n_images", "layer", "watermark_rate_before", "watermark_rate_after",
                                         "outside_change", "tree_removed_fraction", "door_rise_wall",
                                         "door_rise_sky")},
            "insertion_rise": {c: _round(r["inside_rise"]) for c, r in d["insertion_rise"].items()
                               if r is not None}}
    for kind in ("renders", "real"):
        p = eval_dir / f"photo_{kind}.json"
        if p.exists():
            d = json.loads(p.read_text())
            metrics[f"photo_{kind}"] = {**{k: _round(v) for k, v in d["median"].items()},
                                        "images": len(d["rows"])}
    for name in PRESET_EVALS:
        p = eval_dir / f"rewrite_{name}.json"
        if p.exists():
            d = json.loads(p.read_text())
            metrics[f"rewrite_{name}"] = {
                m: {k: _round(r.get(k)) for k in REWRITE_KEYS} for m, r in d["results"].items()}
            rule = json.loads((bundle / "rules" / f"{name}.json").read_text())
            source, target = d["source_concept"] or "spire", None if rule.get("erase") else d["target_concept"]
            metrics[f"rewrite_{name}"].update(source=source, target=target, note=(
                f"held-out images {d['images']}, preset rules/{name}.json ({rule.get('layer')}, "
                f"rank {rule.get('rank')}): {source} " + (f"-> {target}" if target else "erased")))
    config["best_unit_iou"] = best_unit_iou(bundle)
    config["best_unit_iou_paint_layer"] = best_unit_iou(bundle, config.get("paint_layer"))
    path.write_text(json.dumps(config, indent=1) + "\n")
    write_card(bundle)
    return metrics


def steps() -> list[tuple[str, list[str]]]:
    py = [sys.executable, "-m"]
    out = [("checkpoint", py + ["training.gan", "--export-resume"]),
           ("segmenter", py + ["training.segmenter", "--steps", "3000", "--threads", "2", "--out", "runs/segmenter"]),
           ("finalize", py + ["training.finalize", "--skip", "presets"]),
           ("presets", py + ["training.presets", "--choose",
                             "layer3,layer4,layer5,layer6,layer7,layer8", "--ranks", "1,2,4"]),
           ("encoder", py + ["training.encoder", "--bundle", str(BUNDLE), "--minutes", "7"]),
           ("interventions", py + ["core", "eval", "interventions", "default", "--quiet",
                                   "--out", str(EVAL / "interventions.json")])]
    out += [(f"rewrite {name}", py + ["core", "eval", "rewrite", "default", name, *extra,
                                      "--out", str(EVAL / f"rewrite_{name}.json")])
            for name, extra in PRESET_EVALS.items()]
    out += [("photo", None),
            ("photo renders", py + ["core", "eval", "photo", "default", str(RENDERS), "--quiet",
                                    "--out", str(EVAL / "photo_renders.json")]),
            ("photo real", py + ["core", "eval", "photo", "default", str(REAL), "--quiet",
                                 "--out", str(EVAL / "photo_real.json")]),
            ("samples", py + ["core", "sample", "default", "--images", "0-31", "--nrow", "6",
                              "--out", "docs/toytown_samples.png"]),
            ("metrics", None)]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [n for n, _ in steps()]
    p.add_argument("--from", dest="start", choices=names, default=names[0])
    p.add_argument("--only", choices=names)
    a = p.parse_args(argv)
    todo = [a.only] if a.only else names[names.index(a.start):]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    for name, cmd in steps():
        if name not in todo:
            continue
        t = time.time()
        print(f"== {name}", flush=True)
        if name == "photo":
            write_photos()
        elif name == "metrics":
            collect_metrics()
        else:
            subprocess.run(cmd, check=True, env=env)
        print(f"== {name}: {time.time() - t:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
