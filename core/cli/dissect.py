"""``python -m core dissect SOURCE --layer L|all``: label a layer's units with concepts.

Writes ``DIR/<layer>.json`` (default DIR: ``<bundle>/catalog``) and prints the summary table;
``--layer all`` dissects every layer, writes ``DIR/layers.png`` (interpretable units per concept
per layer) and prints one line per layer. The segmenter is the bundle's own
(``segmenter.json`` + ``segmenter.safetensors``), or with ``--segmenter ORG/NAME`` a real-scene
segmenter from the Hub (:mod:`core.hub_segmenter`); its catalogs go to the model's scratch folder,
one folder per segmenter (``catalog-<org>--<name>``), unless ``--out`` says otherwise.
"""
from __future__ import annotations

from pathlib import Path


def _progress_bar(desc: str, total: int):
    from tqdm import tqdm
    bar = tqdm(total=total, desc=desc, unit="img", leave=False, dynamic_ncols=True)

    def update(done, _total):
        bar.update(done - bar.n)
    return bar, update


def main(args) -> int:
    from .. import load_model
    from ..dissect import dissect, layer_chart, save_catalog, summary_table
    from ..images import parse_image_numbers
    from ..segmenter import load_segmenter

    if args.images is not None:
        numbers = parse_image_numbers(args.images)
    else:
        if args.samples < 1:
            raise ValueError(f"--samples must be >= 1, got {args.samples}")
        numbers = parse_image_numbers(f"0-{args.samples - 1}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    model = load_model(args.source, device=args.device)
    bundle_path = model.bundle.path
    if args.segmenter:
        from ..hub_segmenter import load_hub_segmenter
        segmenter = load_hub_segmenter(args.segmenter, input_size=args.seg_size, device=args.device)
    else:
        segmenter = load_segmenter(bundle_path) if bundle_path is not None else None
    if segmenter is None:
        where = bundle_path or args.source
        raise ValueError(f"{where}: this model has no segmenter (segmenter.json + "
                         "segmenter.safetensors in the bundle folder): pass --segmenter ORG/NAME, "
                         "e.g. nvidia/segformer-b0-finetuned-ade-512-512")
    if args.device != "cpu":
        segmenter.net.to(args.device)
    if args.out is not None:
        out = Path(args.out)
    elif args.segmenter:
        from ..hub_segmenter import catalog_folder_name
        out = model.bundle.scratch(catalog_folder_name(args.segmenter))
    elif bundle_path is not None:
        out = Path(bundle_path) / "catalog"
    else:
        raise ValueError("--out is needed for a model that is not a bundle folder")
    layers = model.layers if args.layer == "all" else [model.generator.check_layer(args.layer)]

    catalogs = []
    for layer in layers:
        bar, update = _progress_bar(layer, len(numbers))
        try:
            cat = dissect(model, segmenter, layer, numbers, protocol=args.protocol,
                          batch_size=args.batch_size, progress=update, top_k=args.top_k)
        finally:
            bar.close()
        path = save_catalog(cat, out / f"{layer}.json")
        catalogs.append(cat)
        t = cat["timing"]
        if len(layers) == 1:
            print(summary_table(cat))
        else:
            counts = sorted(((n, c) for c, n in cat["interpretable"].items() if n), reverse=True)
            top = ", ".join(f"{c} {n}" for n, c in counts[:5]) or "none"
            n_int = sum(cat["interpretable"].values())
            print(f"{layer:<12} {len(cat['units']):>5} units  {n_int:>4} interpretable  ({top})")
        print(f"wrote {path} ({len(numbers)} samples; generate {t['generate_s']:.1f} s, segment "
              f"{t['segment_s']:.1f} s, statistics {t['stats_s']:.1f} s)")
    if len(layers) > 1:
        chart = layer_chart(catalogs, out / "layers.png")
        print(f"wrote {chart}")
    if args.push:
        from ..share import push_catalogs
        seg = args.segmenter or "its own segmenter"
        res = push_catalogs(out, args.push, title=f"{model.name}, judged by {seg}",
                            token=args.token, private=not args.public)
        print(f"pushed {len(res.files)} files to {res.url or res.repo_id}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "dissect", help="label units of a layer with concepts (IoU with the bundle's segmenter)",
        description="Generate sample images, segment them with the bundle's segmenter and write a "
                    "catalog per layer: each unit's concept label, IoU, threshold, activation "
                    "quantiles and top images (see core/dissect/ for the protocol).")
    p.add_argument("source", help="bundle folder, legacy .pth/.pt checkpoint, known model id, Hub "
                                  "id, or 'default'")
    p.add_argument("--layer", required=True, help="layer name, or 'all' for every layer")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--samples", type=int, default=1000,
                       help="dissect images 0..N-1 (default 1000)")
    group.add_argument("--images", default=None, help="image numbers instead, e.g. 0-499,1000-1499")
    p.add_argument("--out", default=None, help="folder for <layer>.json (default <bundle>/catalog)")
    p.add_argument("--protocol", choices=("maxiou", "iqr", "top1"), default="maxiou",
                   help="maxiou: IoU-maximising threshold per unit and concept (default); "
                        "iqr: information-quality-ratio thresholds, chance-free (GAN Dissection "
                        "ICLR'19); top1: PNAS top-1%% threshold")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--top-k", type=int, default=12, help="top images kept per unit (default 12)")
    p.add_argument("--segmenter", default=None, metavar="ORG/NAME[@REV]",
                   help="a semantic segmentation model on the Hub (ADE20k classes) instead of the "
                        "bundle's own, e.g. nvidia/segformer-b0-finetuned-ade-512-512")
    p.add_argument("--seg-size", type=int, default=None,
                   help="resize images to this size before the Hub segmenter (default: as they are)")
    p.add_argument("--push", default=None, metavar="ORG/NAME",
                   help="then upload the catalogs to this Hub repo (catalog/<layer>.json), for a "
                        "model config's \"catalog_repo\"")
    p.add_argument("--public", action="store_true", help="with --push: a public repo")
    p.add_argument("--token", default=None, help="with --push: a token (default HF_TOKEN or a login)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=main)
