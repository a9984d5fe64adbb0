"""Train the photo encoder of a bundle on the bundle's own samples.

    python -m training.encoder --bundle models/toytown --minutes 10

Each step draws a fresh batch of z (seeded stream), renders (image, z, features at the encoder
layer) with the frozen generator, and trains the encoder to predict z and the features from the
image. Loss (ganseeing's hybrid loss, simplified):

    (1 - cos)(z_hat, z)                                   z's direction (ProGAN pixel-normalises z)
  + mse(f_hat, f) / mean(f^2) + (1 - cos over channels)  the layer's features
  + pixel_weight * L1(G_after(f_hat), image)            re-render from the predicted features,
                                                         on the first `pixel_batch` images only

Adam, cosine-decayed learning rate over the time budget. Writes encoder.safetensors + encoder.json
into the bundle (with the training settings and held-out metrics on image numbers 0..63, seed 1).

Cost (64-px Toytown sizes, batch 16, pixel batch 4, width 24): about 0.7 CPU-seconds per step
(measured single-threaded), so the 10-minute budget is roughly 850 steps (~14k generated images)
on one free core and somewhat more with two; far fewer if the cores are shared with other jobs.
The step count is whatever fits in ``--minutes`` (the learning rate decays over the time budget);
``--steps`` caps it. Held-out metrics are computed after the budget (about 10 s more).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from core.encoder import build_encoder, save_encoder
from core.optim import Adam
from core.settings import model_settings


def _cos_loss(a, b, dim=1):
    return (1 - F.cosine_similarity(a, b, dim=dim, eps=1e-8)).mean()


def _render_from(g, layer, features):
    """Image rendered from ``features`` as the output of ``layer`` (the layers after it only)."""
    from core.generators import LayerState
    done = tuple(g.layers[:g.layer_index(layer) + 1])
    return g.unclamped_output(g.run(LayerState(features, done)))


def _losses(enc, g, layer, z, f, img, pixel_batch, pixel_weight):
    z_hat, f_hat = enc(img)
    fs = f.pow(2).mean().clamp_min(1e-8)
    lz = _cos_loss(z_hat, z)
    lf = F.mse_loss(f_hat, f) / fs + _cos_loss(f_hat, f)
    lp = torch.zeros(())
    if pixel_weight > 0 and pixel_batch > 0:
        k = min(pixel_batch, len(img))
        lp = (_render_from(g, layer, f_hat[:k]) - img[:k]).abs().mean()
    return lz, lf, lp


@torch.no_grad()
def _sample(g, z, layer):
    state = g.run(g.start(z), stop=layer)
    f = state.x
    img = g.unclamped_output(g.run(state.clone()))
    return f, img


@torch.no_grad()
def evaluate(enc, g, layer, n: int = 64, batch: int = 16) -> dict:
    """Held-out metrics on image numbers 0..n-1 (seed 1): cos(z), feature relative MSE, and the
    PSNR of the images re-rendered from the predicted features and from the predicted z."""
    from core.photo import psnr
    zs = g.sample_z(range(n), seed=1)
    cz, rel, pf, pz = [], [], [], []
    for i in range(0, n, batch):
        z = zs[i:i + batch]
        f, img = _sample(g, z, layer)
        z_hat, f_hat = enc(img)
        cz.append(F.cosine_similarity(z_hat, z, dim=1).mean().item())
        rel.append((F.mse_loss(f_hat, f) / f.pow(2).mean()).item())
        pf.append(psnr(_render_from(g, layer, f_hat), img))
        pz.append(psnr(g.finish(g.run(g.start(z_hat))), img))
    m = lambda v: round(sum(v) / len(v), 4)  # noqa: E731
    return {"images": n, "z_cosine": m(cz), "feature_rel_mse": m(rel),
            "psnr_from_features": m(pf), "psnr_from_z": m(pz)}


def train(model, minutes: float | None = 10.0, steps: int | None = None, batch: int = 16,
          pixel_batch: int = 4, pixel_weight: float = 1.0, lr: float = 1e-3, seed: int = 0,
          layer: str | None = None, width: int = 24, max_width: int = 96, eval_images: int = 64,
          log_every: int = 25, log=print):
    """Train an encoder for ``model`` (core.Model or Generator) until ``minutes`` or ``steps``
    runs out (whichever first; at least one must be given). Returns (encoder, info dict)."""
    from core.model import generator_of
    if minutes is None and steps is None:
        raise ValueError("give minutes or steps")
    g = generator_of(model)
    layer = layer or model_settings(model).paint_layer
    torch.manual_seed(seed)
    enc = build_encoder(g, layer, width, max_width)
    params = [p for p in enc.parameters()]
    opt = Adam(params, betas=(0.9, 0.99))   # plain Adam (torch.optim's first step imports dynamo)
    gen = torch.Generator().manual_seed(seed)
    budget = None if minutes is None else 60.0 * minutes
    t0 = time.perf_counter()
    step, hist = 0, []
    while True:
        elapsed = time.perf_counter() - t0
        frac = max(elapsed / budget if budget else 0.0, step / steps if steps else 0.0)
        if frac >= 1.0:
            break
        lr_now = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        z = torch.randn(batch, g.z_dim, generator=gen)
        f, img = _sample(g, z, layer)
        lz, lf, lp = _losses(enc, g, layer, z, f, img, pixel_batch, pixel_weight)
        loss = lz + lf + pixel_weight * lp
        grads = torch.autograd.grad(loss, params)      # never touches the generator's .grad
        opt.step(list(grads), [lr_now] * len(params))
        step += 1
        hist.append((lz.item(), lf.item(), lp.item()))
        if log and (step % log_every == 0 or step == 1):
            k = hist[-log_every:]
            log(f"step {step:5d}  {time.perf_counter() - t0:6.0f}s  z {sum(h[0] for h in k)/len(k):.4f}"
                f"  feat {sum(h[1] for h in k)/len(k):.4f}  pixel {sum(h[2] for h in k)/len(k):.4f}")
    seconds = time.perf_counter() - t0
    enc.eval().requires_grad_(False)
    metrics = evaluate(enc, g, layer, n=eval_images) if eval_images else {}
    info = {"steps": step, "seconds": round(seconds, 1), "batch": batch, "pixel_batch": pixel_batch,
            "pixel_weight": pixel_weight, "lr": lr, "seed": seed, "images_seen": step * batch,
            "threads": torch.get_num_threads(),
            "final_losses": dict(zip(("z", "features", "pixel"),
                                     [round(sum(h[i] for h in hist[-50:]) / max(1, len(hist[-50:])), 4)
                                      for i in range(3)]))}
    return enc, {"training": info, "metrics": metrics}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="models/toytown", type=Path, help="bundle folder to train for")
    p.add_argument("--minutes", type=float, default=10.0, help="time budget (default 10)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--pixel-batch", type=int, default=4, help="images per batch re-rendered for the pixel loss")
    p.add_argument("--pixel-weight", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layer", default=None, help="layer whose features are predicted (default: the paint layer)")
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--eval-images", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    import core
    model = core.load_model(a.bundle)
    enc, info = train(model, minutes=a.minutes, steps=a.steps, batch=a.batch,
                      pixel_batch=a.pixel_batch, pixel_weight=a.pixel_weight, lr=a.lr, seed=a.seed,
                      layer=a.layer, width=a.width, eval_images=a.eval_images)
    path = save_encoder(enc, a.bundle, info["training"], info["metrics"])
    print(f"wrote {path} and {path.with_suffix('.safetensors').name}: {info['training']['steps']} steps "
          f"in {info['training']['seconds']:.0f}s; held-out {json.dumps(info['metrics'])}")


if __name__ == "__main__":
    main()
