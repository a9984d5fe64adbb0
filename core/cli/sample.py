"""``python -m core sample SOURCE --images 0-15 --out grid.png``: render image numbers to a PNG grid."""
from __future__ import annotations

import math


def parse_noise(text: str):
    """'buffers' | 'zero' | an integer seed."""
    if text in ("buffers", "zero"):
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--noise must be 'buffers', 'zero' or an integer seed, got {text!r}") from None


def main(args) -> int:
    from .. import load_model
    from ..images import parse_image_numbers, save_grid

    numbers = parse_image_numbers(args.images)
    noise = None if args.noise is None else parse_noise(args.noise)
    if args.out.lower().endswith(".png") is False:
        raise ValueError(f"--out must be a .png file, got {args.out!r}")
    model = load_model(args.source, device=args.device)
    images = model.render(numbers, batch_size=args.batch_size, truncation=args.truncation,
                          noise=noise, seed=args.seed)
    nrow = args.nrow or min(len(numbers), max(1, math.ceil(math.sqrt(len(numbers)))))
    captions = None if args.no_captions else [str(i) for i in numbers]
    path = save_grid(images, args.out, nrow=nrow, captions=captions)
    print(f"wrote {path} ({len(numbers)} images from {model.name}, {model.resolution}px)")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sample", help="render image numbers of a model to a PNG grid")
    p.add_argument("source", help="bundle folder, legacy .pth/.pt checkpoint, or 'default'")
    p.add_argument("--images", default="0-15", help="image numbers, e.g. 0-15,20 (default 0-15)")
    p.add_argument("--out", default="grid.png", help="PNG file to write (default grid.png)")
    p.add_argument("--truncation", type=float, default=None,
                   help="truncation psi (default: the bundle's; ProGAN ignores it)")
    p.add_argument("--noise", default=None,
                   help="buffers | zero | SEED (default: the bundle's; ProGAN ignores it)")
    p.add_argument("--seed", type=int, default=1, help="latent stream seed (default 1)")
    p.add_argument("--nrow", type=int, default=0, help="images per row (default: about square)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-captions", action="store_true", help="do not print image numbers under images")
    p.set_defaults(run=main)
