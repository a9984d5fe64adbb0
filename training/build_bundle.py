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

Toytown (`training/toytown.py`): procedural 64x64 town scenes drawn with vectorised numpy, each
with an exact per-pixel label map of {n} classes: {classes}. Layouts, building and tower types
(spires and domes), colours, horizon and lighting (day, overcast, dusk) vary; about
{wm:.0%} of the scenes carry a semi-transparent stock-photo watermark (a word in the middle and/or a
bar along the bottom), the artefact real scene GANs learned from scraped photos. No flips.

## Training recipe

`python -m training.gan` (CPU): the Progressive GAN generator of `core/generators/progan.py`
(PixelNorm, nearest upsampling, equalised learning rate; widths reduced for CPU), grown from
8 to 64 px (each resolution faded in through training-only to-RGB convs) against a residual
discriminator with minibatch stddev that grows the same way; non-saturating logistic loss with
lazy R1; Adam (betas 0/0.99); the exponential moving average of the generator (half-life 10k
images) is what ships.
{training}

The segmenter (`python -m training.segmenter`) is a small encoder-decoder trained on renders
degraded like GAN samples (blur, resolution loss, noise, colour shifts).

## Metrics

{metrics}

## Licence

MIT, like the code: the data is procedural and the model was trained from scratch.
"""


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
        for k in ("metrics", "rankings", "rewrite_layer", "rewrite_rank", "presets"):
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
    card = model_card(cfg, g) + CARD_EXTRA.format(
        n=len(CLASSES), classes=", ".join(CLASSES), wm=WATERMARK_RATE, training=training,
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
