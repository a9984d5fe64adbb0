"""Train the Toytown segmenter that judges generated images.

    python -m training.segmenter --steps 3000 --out runs/segmenter

Renders come with exact labels. Because the segmenter will mostly look at GAN samples, training
images are degraded the way generated ones are (blur, resolution loss, noise, colour shifts), so it
stays accurate on slightly blurry, artefact-laden pictures.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.segmenter import Segmenter, ToySegNet, save_segmenter
from training.toytown import CLASSES, PALETTE, render_batch


def load_labelled(n: int, seed: int, cache_dir=Path("runs")):
    path = cache_dir / f"toytown_labelled_s{seed}_n{n}.npz"
    if path.exists():
        d = np.load(path)
        images, labels = d["images"], d["labels"]
    else:
        images, labels = render_batch(seed, n)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, images=images, labels=labels)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, torch.from_numpy(labels).long()


def _gaussian_blur(x, sigma):
    k = torch.arange(-2, 3, dtype=torch.float32)
    w = torch.exp(-k ** 2 / (2 * sigma ** 2))
    w = w / w.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), w.view(1, 1, 1, 5).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), w.view(1, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)


def degrade(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """GAN-like degradations, each applied to a random half of the batch."""
    n = len(x)

    def some(p):
        return (torch.rand(n, generator=g) < p).view(n, 1, 1, 1).float()

    sigma = 0.4 + 0.8 * torch.rand((), generator=g).item()
    x = x + some(0.5) * (_gaussian_blur(x, sigma) - x)
    low = F.interpolate(F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False,
                                      antialias=True), scale_factor=2, mode="bilinear", align_corners=False)
    x = x + some(0.3) * (low - x)
    gain = 1 + 0.15 * (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1)
    bias = 0.1 * (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1)
    x = x + some(0.5) * (x * gain + bias - x)
    x = x + some(0.5) * torch.randn(x.shape, generator=g) * 0.06
    return x.clamp(-1, 1)


@torch.no_grad()
def evaluate(seg: Segmenter, x, y, batch=128):
    pred = seg.segment(x, batch)
    k = len(seg.concepts)
    inter = torch.bincount((y * k + pred)[y == pred].flatten(), minlength=k * k).view(k, k).diagonal()
    area_p = torch.bincount(pred.flatten(), minlength=k)
    area_y = torch.bincount(y.flatten(), minlength=k)
    iou = inter.float() / (area_p + area_y - inter).clamp(min=1).float()
    return {c: round(float(v), 4) for c, v in zip(seg.concepts, iou)}, float(iou.mean())


def train(args):
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    x, y = load_labelled(args.train_size, seed=1)
    xe, ye = load_labelled(1000, seed=99)
    freq = torch.bincount(y.flatten(), minlength=len(CLASSES)).float()
    weight = (freq / freq.sum()).pow(-0.3)
    weight = weight / weight.mean()
    net = ToySegNet(len(CLASSES), width=args.width)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(x), (args.batch,), generator=g)
        # Random crops: the net is fully convolutional, and crops cost a fraction of full frames.
        c = args.crop
        r0, c0 = torch.randint(0, x.shape[2] - c + 1, (2,), generator=g).tolist()
        xb = degrade(x[idx, :, r0:r0 + c, c0:c0 + c], g)
        loss = F.cross_entropy(net(xb), y[idx, r0:r0 + c, c0:c0 + c], weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} {(time.time() - t0) / step:.2f}s/step", flush=True)
    config = {"architecture": "toyseg", "id": "toyseg-v1", "concepts": CLASSES,
              "kwargs": {"width": args.width}, "palette": PALETTE.tolist()}
    seg = Segmenter(net, CLASSES, PALETTE.tolist(), config)
    clean, miou = evaluate(seg, xe, ye)
    noisy, miou_noisy = evaluate(seg, degrade(xe, torch.Generator().manual_seed(1)), ye)
    config["metrics"] = {"miou_fresh_renders": round(miou, 4), "iou_per_class": clean,
                         "miou_degraded_renders": round(miou_noisy, 4), "iou_per_class_degraded": noisy,
                         "eval_images": "1,000 fresh renders (seed 99)", "train_steps": args.steps,
                         "train_seconds": round(time.time() - t0)}
    save_segmenter(seg, args.out)
    print(json.dumps(config["metrics"], indent=1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/segmenter")
    p.add_argument("--train-size", type=int, default=12000)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--crop", type=int, default=32, help="training crop size (multiple of 4)")
    p.add_argument("--threads", type=int, default=1)
    train(p.parse_args(argv))


if __name__ == "__main__":
    main()
