"""Make the Photo tab's example photos (no internet here, so no real photos):

* ``toytown_777_*.png``: fresh Toytown scenes (``training.toytown.render_batch``) with seed 777,
  which no training run uses, upscaled to 192 px;
* ``field_house.jpg`` / ``hill_trees.jpg``: procedurally synthesised "photo-like" scenes (sky
  gradient, green field, a house or trees, sensor noise), 320x240 so the centre crop shows.

Run ``python -m demos.examples.make_examples`` from the repository root to remake them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
SEED = 777


def toytown(n: int = 3, size: int = 192) -> list[Path]:
    from training.toytown import render_batch
    images, _ = render_batch(SEED, n)
    out = []
    for i, im in enumerate(images):
        path = HERE / f"toytown_{SEED}_{i}.png"
        Image.fromarray(im).resize((size, size), Image.BICUBIC).save(path, optimize=True)
        out.append(path)
    return out


def _sky_field(rng, w, h, horizon):
    y = np.arange(h)[:, None, None] / h
    sky = np.array([70, 130, 210]) * (1 - y) + np.array([185, 215, 240]) * y
    field = np.array([60, 140, 50]) * (1 - y) + np.array([35, 95, 30]) * y
    img = np.where(np.arange(h)[:, None, None] < horizon, sky, field) * np.ones((1, w, 1))
    return img


def _finish(img, rng, path, blur=0.8):
    img = img + rng.normal(0, 6, img.shape)                         # sensor noise
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(blur))
    pil.save(path, quality=90)
    return path


def field_house(w: int = 320, h: int = 240) -> Path:
    rng = np.random.RandomState(SEED)
    img = _sky_field(rng, w, h, int(h * 0.55))
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(pil)
    d.ellipse((40, 30, 110, 55), fill=(240, 240, 245))                 # a cloud
    d.ellipse((70, 22, 140, 52), fill=(245, 245, 250))
    d.rectangle((130, 95, 210, 165), fill=(150, 100, 60))               # brown box house
    d.polygon([(122, 97), (170, 60), (218, 97)], fill=(150, 45, 40))    # roof
    d.rectangle((160, 130, 180, 165), fill=(80, 50, 30))                # door
    d.rectangle((140, 108, 155, 122), fill=(60, 110, 180))              # windows
    d.rectangle((188, 108, 203, 122), fill=(60, 110, 180))
    return _finish(np.asarray(pil).astype(float), rng, HERE / "field_house.jpg")


def hill_trees(w: int = 320, h: int = 240) -> Path:
    rng = np.random.RandomState(SEED + 1)
    img = _sky_field(rng, w, h, int(h * 0.6))
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(pil)
    d.ellipse((-60, 110, 220, 230), fill=(70, 150, 60))                 # a hill
    for x in (200, 240, 275):                                           # trees
        d.rectangle((x - 4, 120, x + 4, 150), fill=(90, 60, 35))
        d.ellipse((x - 22, 75, x + 22, 128), fill=(30, 90 + x % 30, 35))
    return _finish(np.asarray(pil).astype(float), rng, HERE / "hill_trees.jpg")


def main():
    for p in toytown() + [field_house(), hill_trees()]:
        print(p.relative_to(HERE.parent.parent), p.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
