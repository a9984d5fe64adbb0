"""Fitting the generator to a photo: inversion (a latent and a residual at the paint layer) and
image-specific adaptation (small weight edits of the finer layers), with their shared loss."""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..edits import EditStack, Renderer, ResidualEdit, WeightEdit
from ..model import generator_of, sampling_options
from ..optim import Adam
from ..settings import model_settings
from .files import load_photo

# ====================================================================================== shared bits
def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1] (both clamped), i.e. on the 0..1 scale."""
    mse = F.mse_loss(a.detach().float().clamp(-1, 1), b.detach().float().clamp(-1, 1)).item()
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def finish(gen: Iterator[dict]):
    """Run an ``invert``/``adapt`` generator to the end and return the final record's result."""
    last = None
    for last in gen:
        pass
    if last is None or last.get("result") is None:
        raise RuntimeError("the generator ended without a result")
    return last["result"]


def _layer_res(g, layer: str) -> int:
    from ..edits import layer_shape
    return int(layer_shape(g, layer)[1])


def default_fine_layers(model, paint: str | None = None) -> list[str]:
    """Default layers to adapt: those after the paint layer at >= 2x its resolution (layer7..layer10
    for the 64-px Toytown ProGAN, paint layer layer6); at least the last two layers. Only the
    64-px layers (>= 4x) gave +0.1 dB there: 2 x 16 channels cannot fit a photo's detail."""
    g = generator_of(model)
    paint = paint or model_settings(model).paint_layer
    p = g.layer_index(paint)
    res = _layer_res(g, paint)
    out = [n for n in g.layers[p + 1:] if _layer_res(g, n) >= 2 * res]
    if not out:
        out = [n for n in g.layers[-2:] if g.layer_index(n) > p] or g.layers[-1:]
    return out


def segmenter_features(segmenter, images: torch.Tensor) -> list[torch.Tensor]:
    """Intermediate activations used as a perceptual loss: ``segmenter.features(images)`` when the
    object has it, else the ToySegNet encoder's ``enc2`` and ``enc3`` outputs; [] when neither."""
    if segmenter is None:
        return []
    if hasattr(segmenter, "features"):
        return list(segmenter.features(images))
    net = getattr(segmenter, "net", None)
    if net is None or not all(hasattr(net, k) for k in ("enc1", "enc2", "enc3")):
        return []
    e1 = net.enc1(images)
    e2 = net.enc2(e1)
    e3 = net.enc3(e2)
    return [e2, e3]


class PhotoLoss:
    """``L1(render, photo) + feature_weight * sum_k mse(f_k(render), f_k(photo)) / mean f_k(photo)^2``
    with ``f_k`` the segmenter's intermediate activations (photo features computed once)."""

    def __init__(self, photo: torch.Tensor, segmenter=None, feature_weight: float = 0.1):
        self.photo = photo
        self.feature_weight = float(feature_weight)
        self.segmenter = segmenter if self.feature_weight > 0 else None
        with torch.no_grad():
            self.targets = segmenter_features(self.segmenter, photo)
        self.norms = [t.pow(2).mean().clamp_min(1e-8) for t in self.targets]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        loss = (image - self.photo).abs().mean(dim=(1, 2, 3))
        if self.targets:
            feats = segmenter_features(self.segmenter, image)
            for f, t, n in zip(feats, self.targets, self.norms):
                loss = loss + self.feature_weight * (f - t).pow(2).mean(dim=(1, 2, 3)) / n
        return loss              # [N]


def _record(stage, step, steps, loss, image, photo, preview, done=False, stopped=False,
            result=None) -> dict:
    img = image.detach().clamp(-1, 1).cpu()
    return {"stage": stage, "step": int(step), "steps": int(steps), "loss": float(loss),
            "psnr": psnr(img, photo.cpu()), "preview": img if preview else None, "done": done,
            "stopped": stopped, "result": result}


def _lr_at(lr: float, step: int, steps: int, warmup: int = 0) -> float:
    """Cosine decay from lr to lr/10, after a linear warm-up over the first ``warmup`` steps."""
    t = step / max(1, steps)
    ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    return ramp * lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def _as_photo(photo, resolution: int, device) -> torch.Tensor:
    if isinstance(photo, torch.Tensor):
        x = photo.detach().float()
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"photo must be [1,3,H,W] in [-1, 1], got {list(photo.shape)}")
        if x.shape[-1] != resolution or x.shape[-2] != resolution:
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear",
                              align_corners=False, antialias=True)
    else:
        x = load_photo(photo, resolution)
    return x.to(device)


def _report(progress, rec: dict) -> None:
    if progress is not None:
        progress(rec["step"] / max(1, rec["steps"]),
                 desc=f"{rec['stage']}: step {rec['step']}/{rec['steps']}, PSNR {rec['psnr']:.1f} dB")


# ====================================================================================== inversion
@dataclasses.dataclass(eq=False)
class InversionResult:
    """A photo's place in the generator: ``z`` ``[1, z_dim]`` plus an additive ``residual``
    ``[1, C, h, w]`` on the output of ``layer`` (tensors on the CPU)."""
    z: torch.Tensor
    layer: str
    residual: torch.Tensor
    loss: float = float("nan")
    psnr: float = float("nan")
    steps: int = 0
    stopped: bool = False
    seconds: float = 0.0
    start: str = ""                       # "encoder", "encoder+features" or "random (best of N)"
    image: torch.Tensor | None = None     # the final render [1,3,R,R], clamped

    def edit(self) -> ResidualEdit:
        """The residual as an edit: the bottom of every stack that renders this photo (made once:
        every paint stroke renders through it)."""
        if "_edit" not in self.__dict__:
            self.__dict__["_edit"] = ResidualEdit(self.layer, self.residual, "photo residual")
        return self.__dict__["_edit"]

    def render(self, model, stack: EditStack | None = None, renderer: Renderer | None = None) -> torch.Tensor:
        """The inverted photo under an edit stack (adaptation WeightEdits + paint UnitEdits) on
        top of its residual: ``[1,3,R,R]``, through ``renderer`` (the model's shared one in the
        app) like every other image."""
        stack = EditStack((self.edit(),)).push(*(stack or ()))
        return (renderer or Renderer(model)).render(self.z, stack)


def _random_starts(g, model, target_loss: PhotoLoss, starts: int, seed: int, device):
    t, n = sampling_options(model)
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(max(1, int(starts)), g.z_dim, generator=gen).to(device)
    with torch.no_grad():
        scores = []
        for i in range(0, len(z), 8):
            img = g.unclamped_output(g.run(g.start(z[i:i + 8], truncation=t, noise=n)))
            scores.append((img - target_loss.photo).abs().mean(dim=(1, 2, 3)))
        best = int(torch.cat(scores).argmin())
    return z[best:best + 1]


def invert(model, photo, steps: int = 150, encoder=None, segmenter=None, layer: str | None = None,
           lr: float = 0.2, residual_lr: float | None = None, feature_weight: float = 0.1,
           residual_weight: float = 0.05, starts: int = 16, seed: int = 0,
           progress: Callable | None = None, stop: Callable[[], bool] | None = None,
           preview_every: int = 10) -> Iterator[dict]:
    """Invert a photo (``[1,3,R,R]`` in [-1, 1], or anything :func:`load_photo` takes): a generator
    yielding progress records; the final one (``done=True``) has ``result``: an
    :class:`InversionResult` holding the best iterate.

    Start: ``encoder(photo) -> (z, features)`` when given (its features seed the residual when
    that renders closer), else the best of ``starts`` seeded random z by pixel L1. Then ``steps``
    Adam steps (cosine-decayed ``lr``; ``residual_lr`` defaults to ``lr``) on z and the residual at
    ``layer`` (default: the encoder's layer, else the paint layer), minimising :class:`PhotoLoss`
    + ``residual_weight * mean(r^2) / mean(f^2)``. A record is yielded at step 0, every
    ``preview_every`` steps (with a preview) and at the end."""
    t0 = time.perf_counter()
    g = generator_of(model)
    device = g.device
    t, n = sampling_options(model)
    x = _as_photo(photo, g.resolution, device)
    layer = g.check_layer(layer or getattr(encoder, "layer", None) or model_settings(model).paint_layer)
    steps, preview_every = max(0, int(steps)), max(1, int(preview_every))
    objective = PhotoLoss(x, segmenter, feature_weight)

    def prefix(z):
        return g.run(g.start(z, truncation=t, noise=n), stop=layer)

    def tail(state, residual):
        s = state.clone()
        s.x = state.x + residual
        return g.unclamped_output(g.run(s))

    with torch.no_grad():
        if encoder is not None:
            if getattr(encoder, "layer", layer) != layer:
                raise ValueError(f"the encoder predicts {encoder.layer!r} features; invert at that "
                                 f"layer (got layer={layer!r})")
            z_hat, f_hat = encoder(x)
            z0 = z_hat.reshape(1, g.z_dim).to(device)
            s0 = prefix(z0)
            r_enc = (f_hat.to(device) - s0.x)
            cand = [(r_enc, "encoder+features"), (torch.zeros_like(s0.x), "encoder")]
            scores = [float(objective(tail(s0, r))) for r, _ in cand]
            r0, how = cand[int(np.argmin(scores))]
        else:
            z0 = _random_starts(g, model, objective, starts, seed, device)
            s0 = prefix(z0)
            r0, how = torch.zeros_like(s0.x), f"random (best of {max(1, int(starts))})"
        f_scale = s0.x.pow(2).mean().clamp_min(1e-8)

    z = z0.clone().requires_grad_(True)
    r = r0.clone().requires_grad_(True)
    opt = Adam([z, r])
    base_lrs = [lr, lr if residual_lr is None else residual_lr]
    best = None
    stopped = False
    step = 0
    while True:
        image = tail(prefix(z), r)
        loss = objective(image)[0] + residual_weight * r.pow(2).mean() / f_scale
        lv = float(loss.detach())
        if best is None or lv < best[0]:
            best = (lv, z.detach().clone(), r.detach().clone(), image.detach().clamp(-1, 1))
        if step == 0 or step % preview_every == 0:
            rec = _record("invert", step, steps, lv, image, x, preview=True)
            _report(progress, rec)
            yield rec
        if step >= steps:
            break
        if stop is not None and stop():
            stopped = True
            break
        opt.step(list(torch.autograd.grad(loss, [z, r])),
                 [_lr_at(base, step, steps) for base in base_lrs])
        step += 1
    lv, zb, rb, img = best
    result = InversionResult(zb.cpu(), layer, rb.cpu(), loss=lv, psnr=psnr(img, x), steps=step,
                             stopped=stopped, seconds=time.perf_counter() - t0, start=how,
                             image=img.cpu())
    rec = _record("invert", step, steps, lv, img, x, preview=True, done=True, stopped=stopped,
                  result=result)
    _report(progress, rec)
    yield rec


# ====================================================================================== adaptation
@dataclasses.dataclass(eq=False)
class AdaptResult:
    """Image-specific adaptation: ``edits`` (``WeightEdit.full`` per fine layer) to push onto the
    session's stack before paint edits; ``psnr_before``/``psnr`` of the inversion without/with
    them; ``change`` = ``sum ||ΔW||^2 / ||W||^2``."""
    edits: tuple
    layers: tuple
    psnr_before: float
    psnr: float
    loss: float
    change: float
    steps: int = 0
    stopped: bool = False
    seconds: float = 0.0
    image: torch.Tensor | None = None

    def stack(self) -> EditStack:
        return EditStack(self.edits)


def adapt(model, inversion: InversionResult, photo, steps: int = 300,
          fine_layers: list[str] | None = None, penalty: float | None = None, lr: float = 0.05,
          segmenter=None, feature_weight: float = 0.1, progress: Callable | None = None,
          stop: Callable[[], bool] | None = None, preview_every: int = 10) -> Iterator[dict]:
    """Fit dense ΔW on ``fine_layers`` (default :func:`default_fine_layers`: only layers well after the
    paint layer) so the inverted photo matches the photo: Adam (``lr``, cosine-decayed) on
    :class:`PhotoLoss` + ``penalty * sum_l ||ΔW_l||^2 / ||W_l||^2`` (default: the model's
    ``photo_penalty`` setting, :mod:`core.settings`). z and the residual stay fixed;
    the layers before the first fine layer run once. A generator like :func:`invert`; the final
    record's ``result`` is an :class:`AdaptResult` (best iterate). The shared model is never
    modified (gradients go only to the ΔW tensors)."""
    t0 = time.perf_counter()
    if penalty is None:
        penalty = model_settings(model).photo_penalty
    g = generator_of(model)
    device = g.device
    t, n = sampling_options(model)
    x = _as_photo(photo, g.resolution, device)
    layers = list(fine_layers) if fine_layers else default_fine_layers(model)
    for name in layers:
        g.check_layer(name)
    layers = sorted(set(layers), key=g.layer_index)
    first = g.layer_index(layers[0])
    if g.layer_index(inversion.layer) >= first:
        raise ValueError(f"fine layers must come after the inversion layer {inversion.layer!r}; "
                         f"got {', '.join(layers)}")
    steps, preview_every = max(0, int(steps)), max(1, int(preview_every))
    objective = PhotoLoss(x, segmenter, feature_weight)
    residual_edit = EditStack((inversion.edit(),)).feature_edit()
    with torch.no_grad():
        state0 = g.start(inversion.z.to(device), truncation=t, noise=n)
        if first > 0:
            state0 = g.run(state0, stop=g.layers[first - 1], edit=residual_edit)
    weights = {name: g.main_weight(name) for name in layers}
    norms = {name: weights[name].detach().pow(2).sum().clamp_min(1e-12) for name in layers}
    deltas = {name: torch.zeros_like(weights[name], requires_grad=True) for name in layers}
    params = list(deltas.values())
    opt = Adam(params)

    def render():
        s = state0.clone()
        s.weight_deltas = deltas
        return g.unclamped_output(g.run(s, edit=residual_edit))

    best = None
    stopped = False
    step = 0
    psnr_before = None
    while True:
        image = render()
        change = sum(deltas[k].pow(2).sum() / norms[k] for k in layers)
        loss = objective(image)[0] + penalty * change
        lv = float(loss.detach())
        if psnr_before is None:
            psnr_before = psnr(image, x)
        if best is None or lv < best[0]:
            best = (lv, {k: v.detach().clone() for k, v in deltas.items()},
                    image.detach().clamp(-1, 1), float(change.detach()))
        if step == 0 or step % preview_every == 0:
            rec = _record("adapt", step, steps, lv, image, x, preview=True)
            _report(progress, rec)
            yield rec
        if step >= steps:
            break
        if stop is not None and stop():
            stopped = True
            break
        # warm-up: Adam's first steps move every weight by ~lr at once, which overshot on photos
        # the inversion already fits well (the best iterate stayed the unadapted one)
        rate = _lr_at(lr, step, steps, warmup=steps // 10)
        opt.step(list(torch.autograd.grad(loss, params)), [rate] * len(params))
        step += 1
    lv, dbest, img, change = best
    edits = tuple(WeightEdit.full(k, dbest[k].cpu(), label=f"adapt {k}") for k in layers)
    result = AdaptResult(edits, tuple(layers), psnr_before, psnr(img, x), lv, change, step,
                         stopped, time.perf_counter() - t0, img.cpu())
    rec = _record("adapt", step, steps, lv, img, x, preview=True, done=True, stopped=stopped,
                  result=result)
    _report(progress, rec)
    yield rec
