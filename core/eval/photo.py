"""``python -m core eval photo SOURCE DIR [--out FILE.json]``: how well do photos invert and edit?

For each photo in DIR (PNG/JPEG/WebP/GIF/BMP/TIFF; loaded with :func:`core.photo.load_photo`):

- ``psnr_inversion``: PSNR (dB) of the inverted photo (z + feature residual) against the photo;
- ``psnr_adapted``: the same after image-specific adaptation of the fine layers;
- ``seconds``: inversion + adaptation wall time;
- ``editability``: paint ``tree`` (top ``--paint-units`` units of the paint layer's catalog, its
  draw values) into a fixed square (ceil(h/4) cells of the h x h feature grid, a quarter of the way
  down, centred) on the *adapted* model and measure the rise of the tree pixel share inside the
  square (bundle segmenter), divided by the same stroke's mean rise on generated images (image
  numbers 100000.. of seed 1, ``--reference-images`` of them; held out from dissection). 1 = the photo edits like a sample.
  None when the bundle has no catalog, the segmenter lacks the concept, or the stroke raises it
  by less than 0.01 on generated images (the ratio would be noise).

``median`` holds the median of each column (Nones skipped).
"""
from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
METRICS = ("psnr_inversion", "psnr_adapted", "seconds", "editability")
MIN_REFERENCE_RISE = 0.01       # editability is None when the stroke barely works on samples


def _photos(source, limit=None) -> list[tuple[str, object]]:
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder of photos")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{folder}: no photos ({', '.join(IMAGE_SUFFIXES)}) in it")
        items = [(p.stem, p) for p in files]
    else:
        items = []
        for i, item in enumerate(source):
            name = Path(item).stem if isinstance(item, (str, Path)) else f"photo{i}"
            items.append((name, item))
    return items[:limit] if limit else items


def edit_region(h: int, w: int | None = None):
    """The fixed stroke: a ``[h, w]`` feature-grid mask with a ceil(h/4)-cell square a quarter of
    the way down, centred."""
    import torch
    w = w or h
    k = max(1, math.ceil(h / 4))
    r, c = h // 4, (w - k) // 2
    m = torch.zeros(h, w)
    m[r:r + k, c:c + k] = 1.0
    return m


def _share_inside(segmenter, images, index, region_px):
    labels = segmenter.segment(images.clamp(-1, 1))
    inside = region_px.to(labels.device).bool()
    return (labels == index)[:, inside].float().mean(dim=1)       # [N]


def evaluate_photos(model, segmenter, source, steps: int = 150, adapt_steps: int = 300,
                    encoder="auto", concept: str = "tree", catalog: dict | None = None,
                    n_units: int = 10, reference_images: int = 32, reference_start: int = 100000,
                    limit: int | None = None,
                    out=None, progress=None, invert_kwargs: dict | None = None,
                    adapt_kwargs: dict | None = None) -> dict:
    """Invert, adapt and test-edit each photo of ``source`` (a folder or a list of paths / PIL
    images / tensors); see the module docstring. ``encoder="auto"`` uses the bundle's encoder when
    it has one. ``catalog`` defaults to the bundle's catalog of the paint layer. Returns
    ``{"rows": [...], "median": {...}, "reference_rise": float | None, "settings": {...}}`` and
    writes it as JSON to ``out`` when given. ``progress(i, n, name)`` is called per photo."""
    import torch

    from ..edits import EditStack, layer_shape
    from ..model import generator_of, sampling_options
    from ..encoder import load_encoder
    from ..paint import CatalogError, load_catalog, paint_edit
    from ..photo import adapt, finish, invert, load_photo
    from ..settings import model_settings

    g = generator_of(model)
    layer = model_settings(model).paint_layer
    if encoder == "auto":
        encoder = load_encoder(model)
    photos = _photos(source, limit)
    skipped = None
    stroke = None
    c, h, w = layer_shape(g, layer)
    region = edit_region(h, w)
    res = g.resolution
    region_px = torch.nn.functional.interpolate(region[None, None], size=(res, res),
                                                mode="nearest")[0, 0]
    if segmenter is None or concept not in getattr(segmenter, "concepts", []):
        skipped = f"the segmenter does not know {concept!r}"
    else:
        try:
            cat = catalog if catalog is not None else load_catalog(model, layer)
            stroke = paint_edit(cat, layer, concept, region, mode="draw", n_units=n_units)
        except (CatalogError, ValueError, KeyError) as e:
            skipped = f"no {concept} stroke: {e}"
    reference = None
    if stroke is not None:
        index = segmenter.concept_index(concept)
        z = g.sample_z(range(int(reference_start), int(reference_start) + int(reference_images)),
                       seed=1)
        z = z.to(g.device)
        stack = EditStack((stroke,))
        t, n = sampling_options(model)
        with torch.no_grad():
            before = g.generate(z, truncation=t, noise=n)
            after = g.generate(z, truncation=t, noise=n, edit=stack.feature_edit())
            rise = (_share_inside(segmenter, after, index, region_px)
                    - _share_inside(segmenter, before, index, region_px))
        reference = float(rise.mean())
        if reference < MIN_REFERENCE_RISE:
            skipped = (f"painting {concept} raises its share inside the stroke by only "
                       f"{reference:.4f} on generated images (< {MIN_REFERENCE_RISE}): the ratio "
                       "would be noise")

    rows = []
    for i, (name, item) in enumerate(photos):
        if progress is not None:
            progress(i, len(photos), name)
        row = {"name": name}
        try:
            x = load_photo(item, res)
        except ValueError as e:
            row.update({k: None for k in METRICS}, error=str(e))
            rows.append(row)
            continue
        t0 = time.perf_counter()
        inv = finish(invert(model, x, steps=steps, encoder=encoder, segmenter=segmenter,
                            **(invert_kwargs or {})))
        ada = finish(adapt(model, inv, x, steps=adapt_steps, segmenter=segmenter,
                           **(adapt_kwargs or {})))
        row["seconds"] = round(time.perf_counter() - t0, 2)
        row["psnr_inversion"] = round(inv.psnr, 3)
        row["psnr_adapted"] = round(ada.psnr, 3)
        row["start"] = inv.start
        row["editability"] = None
        if stroke is not None:
            base = ada.stack()
            with torch.no_grad():
                before = inv.render(model, base)
                after = inv.render(model, base.push(stroke))
                r = float((_share_inside(segmenter, after, index, region_px)
                           - _share_inside(segmenter, before, index, region_px))[0])
            row["tree_rise" if concept == "tree" else f"{concept}_rise"] = round(r, 4)
            if skipped is None:
                row["editability"] = round(r / reference, 4)
        rows.append(row)
    if progress is not None:
        progress(len(photos), len(photos), "")

    median = {}
    for k in METRICS:
        vals = [r[k] for r in rows if r.get(k) is not None]
        median[k] = round(statistics.median(vals), 4) if vals else None
    result = {"rows": rows, "median": median,
              "reference_rise": None if reference is None else round(reference, 4),
              "settings": {"steps": steps, "adapt_steps": adapt_steps, "concept": concept,
                           "paint_layer": layer, "n_units": n_units,
                           "reference_images": reference_images, "reference_start": reference_start,
                           "encoder": encoder is not None, "resolution": res},
              "skipped": skipped}
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def format_table(res: dict) -> str:
    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
    cols = ("name",) + METRICS
    lines = ["  ".join(f"{c:>15}" for c in cols)]
    for r in res["rows"] + [{"name": "median", **res["median"]}]:
        lines.append("  ".join(f"{fmt(r.get(c)):>15}" for c in cols))
    if res.get("skipped"):
        lines.append(f"editability skipped: {res['skipped']}")
    return "\n".join(lines)


def main(args) -> int:
    from .. import load_model
    from ..segmenter import load_segmenter

    model = load_model(args.source, device=args.device)
    seg = load_segmenter(model.bundle.path) if model.bundle.path is not None else None

    def progress(i, n, name):
        if not args.quiet:
            print(f"\r{i}/{n} photos {name[:30]:<30}", end="" if i < n else "\n", flush=True)

    res = evaluate_photos(model, seg, args.dir, steps=args.steps, adapt_steps=args.adapt_steps,
                          encoder=None if args.no_encoder else "auto", concept=args.concept,
                          n_units=args.paint_units, reference_images=args.reference_images,
                          limit=args.limit, out=args.out, progress=progress)
    print(format_table(res))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def add_eval_parser(subparsers) -> None:
    import argparse
    p = subparsers.add_parser("photo", help="invert, adapt and test-edit a folder of photos "
                              "(PSNR, seconds, editability)",
                              description=__doc__.split("\n\n", 1)[1].replace(":func:", ""),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="bundle folder or 'default'")
    p.add_argument("dir", help="folder of photos")
    p.add_argument("--out", help="JSON file to write")
    p.add_argument("--steps", type=int, default=150, help="inversion steps (default 150)")
    p.add_argument("--adapt-steps", type=int, default=300, help="adaptation steps (default 300)")
    p.add_argument("--limit", type=int, default=None, help="only the first N photos")
    p.add_argument("--concept", default="tree", help="concept painted for editability (default tree)")
    p.add_argument("--paint-units", type=int, default=10, help="units per stroke (default 10)")
    p.add_argument("--reference-images", type=int, default=32,
                   help="generated images for the reference rise (default 32)")
    p.add_argument("--no-encoder", action="store_true", help="ignore the bundle's encoder")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(run=main)
