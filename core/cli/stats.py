"""``python -m core stats SOURCE --layer L|all [--samples 1000] [--out DIR]``: key statistics.

Computes ``C = E[k kᵀ]`` of a layer's rewriting keys over image numbers ``0..samples-1`` (seed 1,
the model's truncation/noise unless given) and writes ``<bundle>/stats/<layer>.safetensors`` (or
``DIR/<layer>.safetensors``). ``--layer all`` does every layer that has a weight.
"""
from __future__ import annotations


def main(args) -> int:
    from .. import load_model
    from ..generators import LayerError
    from ..rewrite import DEFAULT_STATS_BATCH, collect_key_stats, save_key_stats, stats_path
    from pathlib import Path

    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    model = load_model(args.source, device=args.device)
    g = model.generator
    if args.layer == "all":
        layers = []
        for name in g.layers:
            try:
                g.main_weight(name)
                layers.append(name)
            except LayerError:
                continue
    else:
        layers = [g.check_layer(args.layer)]
        g.main_weight(args.layer)
    noise = None
    if args.noise is not None:
        from .sample import parse_noise
        noise = parse_noise(args.noise)
    dests = {}
    for layer in layers:           # resolve every destination before the long work
        dests[layer] = (Path(args.out) / f"{layer}.safetensors" if args.out
                        else stats_path(model, layer))
    try:
        from tqdm import tqdm
    except ImportError:            # pragma: no cover - tqdm is a requirement
        tqdm = None
    for layer in layers:
        bar = tqdm(total=args.samples, desc=layer, unit="img") if tqdm else None

        def progress(done, total, _, bar=bar):
            if bar is not None:
                bar.update(done - bar.n)

        stats = collect_key_stats(model, layer, range(args.samples),
                                  batch_size=args.batch_size or DEFAULT_STATS_BATCH,
                                  progress=progress, truncation=args.truncation, noise=noise,
                                  seed=args.seed)
        if bar is not None:
            bar.close()
        path = save_key_stats(stats, dests[layer])
        print(f"wrote {path} ({stats.meta['samples']} images, {stats.count} keys of "
              f"{stats.mom2.shape[0]} channels)")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("stats", help="compute key statistics E[kk^T] for rewriting",
                              description="Collect the uncentered second moment of a layer's "
                              "rewriting keys over images 0..SAMPLES-1 (seed 1) and store it in "
                              "the bundle (stats/<layer>.safetensors).")
    p.add_argument("source", help="bundle folder (or 'default'; a .pth/.pt needs --out)")
    p.add_argument("--layer", required=True, help="layer name, or 'all'")
    p.add_argument("--samples", type=int, default=1000, help="number of images (default 1000)")
    p.add_argument("--out", default=None, help="folder to write <layer>.safetensors to "
                   "(default: the bundle's stats/)")
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--seed", type=int, default=1, help="latent stream seed (default 1)")
    p.add_argument("--truncation", type=float, default=None,
                   help="truncation psi (default: the bundle's)")
    p.add_argument("--noise", default=None, help="buffers | zero | SEED (default: the bundle's)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=main)
