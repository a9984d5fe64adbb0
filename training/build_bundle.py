"""Assemble the embedded default bundle models/toytown from training outputs.

    python -m training.build_bundle --gan runs/gan --segmenter runs/segmenter --out models/toytown

Copies the EMA generator (loaded through the same ProGAN code as gandissect checkpoints), the
segmenter, and writes config.json and the model card. Catalogs, statistics and the encoder are
added to the same folder by their own commands and are kept when the bundle is rebuilt.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from core.bundle import model_card, read_config, save_bundle
from core.generators.progan import from_state_dict
from training.toytown import CLASSES, WATERMARK_RATE

PAINT_LAYER = "layer6"  # 16x16: switching units off removes more there than at layer4 (README table)

CARD_EXTRA = """
## Data

Toytown 2 (`training/toytown.py`): procedural 64x64 town scenes with an exact per-pixel label map of
{n} classes: {classes}. A scene is a function of its latent: the renderer reads its random choices
(layout, building and tower types, spires and domes, colours, horizon, day / overcast / dusk
lighting, trees, clouds) from fixed slots of `Phi(z)`. Flat shading without grain, every detail at
least 3 px wide, towers in most scenes, and a bold stock-photo watermark on {wm:.0%} of the scenes
(the word PHOTO across the middle and/or a dark banner along the bottom, always in the same place),
the artefact real scene GANs learned from scraped photos. No flips.

## Training recipe

`python -m training.gan` (CPU): the Progressive GAN generator of `core/generators/progan.py`
(PixelNorm, nearest upsampling, equalised learning rate), grown from 8 to 64 px (each resolution
faded in through training-only to-RGB convs) against a residual discriminator with minibatch stddev
that grows the same way; Adam (betas 0/0.99); the exponential moving average of the generator is
what ships. The recipe was chosen by a bake-off at equal CPU time (`python -m training.bakeoff`,
table below).
{training}

The segmenter (`python -m training.segmenter`) is a small encoder-decoder trained on renders
degraded like GAN samples (blur, resolution loss, noise, colour shifts).
{bakeoff}{versions}
## Metrics

{metrics}

## Licence

MIT, like the code: the data is procedural and the model was trained from scratch.
"""
ROOT = Path(__file__).resolve().parent.parent
V1 = ROOT / "docs/eval/toytown1.json"       # Toytown 1's numbers, kept for the comparison
BAKEOFF = ROOT / "docs/eval/bakeoff.json"


def _get(d: dict, *keys):
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple)):
        return f"{v[0]:.2f} ({v[1]})"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def versions_table(v1: dict, v2: dict) -> str:
    """Toytown 1 beside this model: the same metrics on the same held-out image numbers."""
    def metric(*keys):
        return lambda d: _fmt(_get(d, "metrics", *keys))

    def removal(d):
        return f"{metric('interventions', 'watermark_rate_before')(d)} -> " \
               f"{metric('interventions', 'watermark_rate_after')(d)}"
    rows = [("FSD", metric("quality", "fsd")),
            ("samples with a watermark (its data)", lambda d: f"{metric('quality', 'watermark_image_share_samples')(d)} "
                                                         f"({metric('quality', 'watermark_image_share_renders')(d)})"),
            ("watermark rate, units off", removal),
            ("outside change of that removal", metric("interventions", "outside_change")),
            ("tree pixels removed (20 units)", metric("interventions", "tree_removed_fraction")),
            ("door painted on walls: rise", metric("interventions", "door_rise_wall")),
            ("spires -> trees: effectiveness", metric("rewrite_spires_to_trees", "ours", "effectiveness")),
            ("spires -> trees: generality", metric("rewrite_spires_to_trees", "ours", "generality")),
            ("spires -> trees: collateral clean", metric("rewrite_spires_to_trees", "ours", "collateral_clean")),
            ("photo PSNR after adaptation (dB)", metric("photo_renders", "psnr_adapted")),
            ("photo editability", metric("photo_renders", "editability"))]
    concepts = sorted(set(v1.get("best_unit_iou", {})) | set(v2.get("best_unit_iou", {})))
    rows += [(f"best unit IoU: {c}", lambda d, c=c: _fmt(_get(d, "best_unit_iou", c))) for c in concepts]
    lines = ["| metric | Toytown 1 | this model |", "|---|---|---|"]
    lines += [f"| {name} | {f(v1)} | {f(v2)} |" for name, f in rows]
    return ("\n## Toytown 1 and this model\n\nThe same evaluations on the same held-out image numbers "
            "(100000-100199; FSD: 200000+), each model judged by its own segmenter.\n\n"
            + "\n".join(lines) + "\n")


def bakeoff_table() -> str:
    if not BAKEOFF.exists():
        return ""
    from training.bakeoff import table
    d = json.loads(BAKEOFF.read_text())
    return f"\n## Recipe bake-off\n\n{d['note']}.\n\n{table(d['results'])}\n"


def build(gan_dir: Path, seg_dir: Path, out: Path) -> Path:
    sd = load_file(gan_dir / "generator_ema.safetensors")
    g = from_state_dict(sd, output_clamp=True)
    training = {}
    state = gan_dir / "state.pt"
    if state.exists():
        st = torch.load(state, map_location="cpu", weights_only=True)
        training = {"steps": int(st["step"]), "minutes": round(float(st["seconds"]) / 60, 1),
                    "images_seen": int(st["images"]), "recipe": st["recipe"]}
    extra = {"license": "mit", "paint_layer": PAINT_LAYER, "concepts": CLASSES,
             "training": training, "dataset": {"name": "toytown", "resolution": 64,
                                               "watermark_rate": WATERMARK_RATE}}
    old = out / "config.json"
    if old.exists():  # keep metrics and other keys written by later steps
        prev = read_config(out)
        for k in ("metrics", "rankings", "rewrite_layer", "rewrite_rank", "presets", "photo_penalty"):
            if k in prev:
                extra[k] = prev[k]
    save_bundle(g, out, name="toytown", extra_config=extra, overwrite=True)
    for name in ("segmenter.json", "segmenter.safetensors"):
        shutil.copy(seg_dir / name, out / name)
    write_card(out)
    return out


def write_card(out: Path):
    cfg = read_config(out)
    g = from_state_dict(load_file(out / "generator.safetensors"), output_clamp=True)
    seg = json.loads((out / "segmenter.json").read_text())
    metrics = dict(cfg.get("metrics", {}))
    metrics["segmenter"] = seg.get("metrics", {})
    t = cfg.get("training") or {}
    hardware = " and ".join(sorted({r.get("device", "2 CPU cores") for r in t.get("recipe", [])})
                            or ["2 CPU cores"])
    training = (f"Trained for {t['steps']:,} steps ({t['images_seen']:,} images) in {t['minutes']} "
                f"minutes on {hardware}." if t else "")
    for r in t.get("recipe", []):
        training += (f"\nFrom step {r['from_step']:,}: schedule `{r['schedule']}` (res:steps[:batch]), "
                     f"fade {r['fade']} steps, lr {r['lr']}, R1 gamma {r['r1_gamma']} every "
                     f"{r['r1_every']} steps.")
    v1 = json.loads(V1.read_text()) if V1.exists() else None
    v2 = {"metrics": cfg.get("metrics", {}), "best_unit_iou": cfg.get("best_unit_iou", {})}
    card = model_card(cfg, g) + CARD_EXTRA.format(
        n=len(CLASSES), classes=", ".join(CLASSES), wm=WATERMARK_RATE, training=training,
        bakeoff=bakeoff_table(), versions=versions_table(v1, v2) if v1 else "",
        metrics="```json\n" + json.dumps(metrics, indent=1) + "\n```")
    (out / "README.md").write_text(card)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gan", default="runs/gan", type=Path)
    p.add_argument("--segmenter", default="runs/segmenter", type=Path)
    p.add_argument("--out", default="models/toytown", type=Path)
    a = p.parse_args(argv)
    print(build(a.gan, a.segmenter, a.out))


if __name__ == "__main__":
    main()
