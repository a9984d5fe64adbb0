"""The weight update: closed form on layers whose value is linear in the weight, Levenberg–Marquardt
and the original Adam otherwise; and erasing units from a context."""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import torch
import torch.nn.functional as F

from ..generators.base import Generator
from ..optim import Adam
from .direction import context_direction, context_keys
from .keys import (Progress, RewriteError, Stop, _base_weight, _key_state, _make_edit, _numbers, _parts,
                   bounding_box, edit_delta, low_rank_delta, project_weight, resize_mask)
from .stats import _C

CLOSED_FORM_RIDGE = 1e-6              # ridge, relative to the mean diagonal of FᵀF
ORIGINAL_NITER, ORIGINAL_LR, ORIGINAL_PITER = 2001, 0.05, 10    # the original defaults
GN_ITERS = 15                         # Levenberg–Marquardt iterations of our iterative solver
LOWRANK_NITER, LOWRANK_LR = 0, 0.05   # optional Adam refinement after it (lr relative to Λ's RMS)


# =============================================================================== the update
@dataclasses.dataclass
class _Problem:
    """Everything an iterative solver needs on the cropped region of one image."""
    g: Generator
    layer: str
    key: torch.Tensor               # [1, C_in, kh, kw] cropped key (with margin)
    state: object
    offset: tuple[int, int]          # origin of the crop's output in the full value map
    inner: tuple[int, int, int, int]  # region box inside the crop's output
    target: torch.Tensor            # [1, C_out, bh, bw]
    weight: torch.Tensor            # [1, 1, bh, bw] region weights
    w0: torch.Tensor                # base raw weight

    def value(self, weight: torch.Tensor) -> torch.Tensor:
        out = self.g.layer_value(self.layer, self.key, weight=weight, state=self.state, offset=self.offset)
        t, l, b, r = self.inner
        return out[:, :, t:b, l:r]

    def l1(self, weight):
        d = (self.value(weight) - self.target).abs() * self.weight
        return d.sum() / (self.weight.sum() * self.target.shape[1])

    def mse(self, weight):
        d = (self.value(weight) - self.target).pow(2) * self.weight
        return d.sum() / (self.weight.sum() * self.target.shape[1])


def _problem(model, layer, image_number, target_value, region, weight_deltas) -> _Problem:
    g, t, n, _ = _parts(model)
    key, state = _key_state(g, layer, g.sample_z([image_number]), t, n, weight_deltas)
    w0 = _base_weight(g, layer, weight_deltas)
    target = torch.as_tensor(target_value).to(key)
    if target.dim() == 4 and target.shape[0] == 1:
        target = target[0]
    with torch.no_grad():
        full = g.layer_value(layer, key, weight=w0, state=state)
    H, W = full.shape[-2:]
    if tuple(target.shape) != tuple(full.shape[1:]):
        raise RewriteError(f"target value must be {list(full.shape[1:])} for {layer}, got "
                           f"{list(target.shape)}")
    reg = resize_mask(region, (H, W), what="region").to(key) if region is not None \
        else torch.ones(H, W, device=key.device)
    box = bounding_box(reg)
    if box is None:
        raise RewriteError("empty region: the update has no pixels to fit")
    bt, bl, bb, br = box
    kh, kw = key.shape[-2:]
    ry, rx = H // kh, W // kw                      # value pixels per key pixel (1 or 2; 4 at 1x1)
    m = 2                                          # key margin: covers 3x3 convs and up + blur
    at, al = max(0, bt // ry - m), max(0, bl // rx - m)
    ab, ar = min(kh, -(-bb // ry) + m), min(kw, -(-br // rx) + m)
    oy, ox = at * ry, al * rx
    return _Problem(g, layer, key[:, :, at:ab, al:ar].contiguous(), state, (oy, ox),
                    (bt - oy, bl - ox, bb - oy, br - ox), target[None, :, bt:bb, bl:br].detach(),
                    reg[bt:bb, bl:br][None, None].detach(), w0)


def _orthonormal_dirs(dirs, c_in: int) -> torch.Tensor:
    d = torch.as_tensor(dirs, dtype=torch.float32)
    if d.dim() == 1:
        d = d[None]
    if d.dim() != 2 or d.shape[1] != c_in:
        raise RewriteError(f"dirs must be [rank, {c_in}], got {list(d.shape)}")
    if d.shape[0] > c_in:
        raise RewriteError(f"rank {d.shape[0]} is larger than the layer's {c_in} key channels")
    gram = d.double() @ d.double().T
    if not torch.allclose(gram, torch.eye(d.shape[0], dtype=torch.float64), atol=1e-4):
        q, _ = torch.linalg.qr(d.double().T)
        signs = torch.sign(torch.einsum("ir,ri->r", q, d.double().T))
        signs[signs == 0] = 1
        d = (q * signs).T.float()
    return d


def _closed_form(model, layer, dirs, image_number, target_value, region, weight_deltas, ridge,
                 info) -> torch.Tensor:
    """Least squares for Λ on a layer whose value is a plain conv (``value_linear_in_weight``):
    the value is conv(k, W + Λ·D) and only D·k matters, so the features are the k x k taps of the
    keys projected on D."""
    g, t, n, _ = _parts(model)
    padding = g.conv_padding(layer)
    key, _ = _key_state(g, layer, g.sample_z([image_number]), t, n, weight_deltas)
    w0 = _base_weight(g, layer, weight_deltas)
    c_out, _, kh, kw = w0.shape
    with torch.no_grad():
        v0 = F.conv2d(key, w0, padding=padding)[0]                     # [C_out, H, W]
        target = torch.as_tensor(target_value).to(v0)
        target = target[0] if target.dim() == 4 else target
        if target.shape != v0.shape:
            raise RewriteError(f"target value must be {list(v0.shape)} for {layer}, got "
                               f"{list(target.shape)}")
        H, W = v0.shape[-2:]
        reg = resize_mask(region, (H, W), what="region").to(v0) if region is not None \
            else torch.ones(H, W, device=v0.device)
        sel = reg.reshape(-1) > 0
        if not bool(sel.any()):
            raise RewriteError("empty region: the update has no pixels to fit")
        kd = torch.einsum("ri,nihw->nrhw", dirs.to(key), key).double()          # keys along D
        feats = F.unfold(kd, (kh, kw), padding=padding)[0]               # [rank*kh*kw, H*W]
        if feats.shape[1] != H * W:
            raise RewriteError(f"{layer}: unexpected conv geometry (unfold gives {feats.shape[1]} "
                               f"positions for a {H}x{W} output)")
        A = feats[:, sel].T                                                    # [P, rank*k*k]
        R = (target - v0).reshape(c_out, -1)[:, sel].T.double()                # [P, C_out]
        sw = reg.reshape(-1)[sel].double().sqrt()[:, None]
        A, R = A * sw, R * sw
        nf = A.shape[1]
        lam_ridge = ridge * float((A * A).sum()) / nf + 1e-12
        A_aug = torch.cat([A, math.sqrt(lam_ridge) * torch.eye(nf, dtype=A.dtype, device=A.device)])
        R_aug = torch.cat([R, torch.zeros(nf, c_out, dtype=R.dtype, device=R.device)])
        sol = torch.linalg.lstsq(A_aug.cpu(), R_aug.cpu()).solution.to(A.device)     # [nf, C_out]
        lam = sol.T.reshape(c_out, dirs.shape[0], kh, kw)
        if info is not None:
            before = float((R ** 2).sum() / (sw ** 2).sum() / c_out)
            res = R - A @ sol
            info.update(loss_before=before, loss=float((res ** 2).sum() / (sw ** 2).sum() / c_out),
                        pixels=int(sel.sum()), ridge=lam_ridge)
    return lam.float()


def _lowrank_iterative(p: _Problem, dirs, gn_iters, niter, lr, progress, stop, info) -> torch.Tensor:
    """Fit Λ directly (ΔW = Λ·D: the update never leaves span(D)), MSE on the cropped region.

    1. Levenberg–Marquardt: output channel o depends only on Λ[o] (its demodulation, bias, noise
       and activation are per channel), so the Jacobian is block-diagonal and ``rank*k*k``
       central differences (one per tap, all channels at once: 2 forward passes each, step
       1e-2 x RMS(W)) give all of it; each iteration solves
       ``(JᵀJ + μ·mean diag)δ = Jᵀr`` per channel, accepting a step only if the loss drops.
       Scale-free; exact in one step on a linear layer.
    2. Optional Adam refinement (``niter`` steps, step size ``lr`` times Λ's RMS, cosine-decayed
       to a tenth); the best iterate is kept."""
    rank = dirs.shape[0]
    shape = list(p.w0.shape)
    shape[-3] = rank
    nf = rank * shape[-2] * shape[-1]
    d = dirs.to(p.w0)
    lam = torch.zeros(shape, device=p.w0.device, dtype=p.w0.dtype)
    sw = p.weight.sqrt()
    total = gn_iters + niter
    eps = 1e-2 * max(float(p.w0.pow(2).mean().sqrt()), 1e-8)     # finite-difference step on Λ

    def loss_of(l):
        with torch.no_grad():
            return float(p.mse(p.w0 + low_rank_delta(l, d)))

    cur = loss_of(lam)
    history, mu, done = [cur], 1e-3, 0
    for it in range(gn_iters):
        if stop is not None and stop():
            break
        cols = []
        with torch.no_grad():
            primal = p.value(p.w0 + low_rank_delta(lam, d))
            for j in range(nf):                     # central differences along tap j, all o at once
                e = torch.zeros(shape[:-3] + [nf], device=lam.device, dtype=lam.dtype)
                e[..., j] = eps
                e = e.reshape(shape)
                plus = p.value(p.w0 + low_rank_delta(lam + e, d))
                minus = p.value(p.w0 + low_rank_delta(lam - e, d))
                cols.append((((plus - minus) / (2 * eps)) * sw)[0].flatten(1))   # [C_out, P]
        J = torch.stack(cols, -1).double()                                   # [C_out, P, nf]
        r = ((p.target - primal) * sw)[0].flatten(1).double()               # [C_out, P]
        JtJ = J.transpose(1, 2) @ J
        Jtr = (J.transpose(1, 2) @ r[..., None])[..., 0]
        scale = torch.diagonal(JtJ, dim1=1, dim2=2).mean(1).clamp_min(1e-30)[:, None, None]
        eye = torch.eye(nf, dtype=J.dtype, device=J.device)
        improved = False
        while mu <= 1e6:
            step = torch.linalg.solve(JtJ + mu * scale * eye, Jtr[..., None])[..., 0]
            cand = lam + step.to(lam.dtype).reshape(shape)
            new = loss_of(cand)
            if new < cur:
                lam, cur, mu, improved = cand, new, max(mu / 3, 1e-9), True
                break
            mu *= 10
        history.append(cur)
        done += 1
        if progress is not None:
            progress(done, total, cur)
        if not improved or history[-2] - history[-1] <= 1e-6 * history[0]:
            break
    if niter > 0 and not (stop is not None and stop()):
        lam_p = lam.clone().requires_grad_(True)
        rms = float(lam.pow(2).mean().sqrt())
        base_lr = lr * (rms if rms > 0 else 1.0)
        opt = Adam([lam_p])
        best, best_lam = cur, lam.clone()
        for it in range(niter):
            if stop is not None and stop():
                break
            with torch.enable_grad():
                loss = p.mse(p.w0 + low_rank_delta(lam_p, d))
                grad, = torch.autograd.grad(loss, lam_p)
            lv = float(loss.detach())
            if lv < best:
                best, best_lam = lv, lam_p.detach().clone()
            history.append(lv)
            opt.step([grad], base_lr * (0.1 + 0.45 * (1 + math.cos(math.pi * it / niter))))
            done += 1
            if progress is not None and (it % 10 == 0 or it == niter - 1):
                progress(done, total, lv)
        last = loss_of(lam_p.detach())
        cur, lam = (last, lam_p.detach()) if last < best else (best, best_lam)
    if info is not None:
        info.update(loss_before=history[0], loss=cur, history=history, steps=done)
    return lam.detach()


def _original_insert(p: _Problem, dirs, niter, lr, piter, project_gradient, progress, stop,
                     info) -> torch.Tensor:
    """The original ``insert``: Adam on the FULL weight, L1 loss, projection
    ``W <- W0_perp + W·DᵀD`` every ``piter`` steps and after the last one."""
    d = dirs.to(p.w0)
    weight = p.w0.clone().requires_grad_(True)
    with torch.no_grad():
        ortho = p.w0 - project_weight(p.w0, d)
    opt = Adam([weight])
    history = []
    for it in range(niter):
        stopping = stop is not None and stop()
        if not stopping:
            with torch.enable_grad():
                loss = p.l1(weight)
                grad, = torch.autograd.grad(loss, weight)
            if project_gradient:
                grad = project_weight(grad, d)
            opt.step([grad], lr)
            history.append(float(loss.detach()))
            if progress is not None and (it % 10 == 0 or it == niter - 1):
                progress(it + 1, niter, history[-1])
        if stopping or it % piter == 0 or it == niter - 1:
            with torch.no_grad():
                weight.copy_(ortho + project_weight(weight, d))
        if stopping:
            break
    with torch.no_grad():
        final = float(p.l1(weight))
    if info is not None:
        info.update(loss_before=history[0] if history else final, loss=final, history=history,
                    steps=len(history))
    with torch.no_grad():
        return torch.einsum("...ihw,ri->...rhw", weight - p.w0, d)
METHODS = ("closed_form", "iterative", "original")


def rewrite(model, layer: str, dirs, target_image_number: int, target_value, region, C=None,
            method: str = "closed_form", *, weight_deltas=None, ridge: float = CLOSED_FORM_RIDGE,
            niter: int | None = None, lr: float | None = None, piter: int = ORIGINAL_PITER,
            gn_iters: int = GN_ITERS,
            project_gradient: bool = False, progress: Progress | None = None,
            stop: Stop | None = None, label: str = "", info: dict | None = None):
    """Change ``layer``'s weight along ``dirs`` (D [rank, C_in]) so that image
    ``target_image_number`` produces ``target_value`` ([C_out, H, W] value map) inside ``region``
    ([H, W] mask on the value grid, or None = everywhere). Returns ``WeightEdit(layer, Λ, D)``.

    Methods:

    - ``"closed_form"`` (default): on ProGAN (linear value) the ridge least-squares Λ minimising
      ``||conv(k, W + Λ·D) - v_target||²`` over the region's pixels (``torch.linalg.lstsq`` on the
      k x k taps of ``D·k``; ridge ``ridge * mean diag(FᵀF)``, default 1e-6, only for
      stability). StyleGAN2 has no closed form (demodulation): there it means ``"iterative"``.
    - ``"iterative"``: fit Λ directly (the update never leaves span(D)), MSE on the cropped
      region: ``gn_iters`` (15) Levenberg–Marquardt iterations on the block-diagonal Jacobian
      (central differences), then ``niter`` (default 0) Adam steps on Λ with step ``lr`` (0.05) x RMS(Λ).
      (Plain Adam on Λ at a fixed lr was tried first: it needs the lr matched to Λ's scale and,
      e.g., reached an MSE of 2446 after 400 steps where the least-squares optimum is 715 on a
      random 256->192 ProGAN layer; LM reaches it in one iteration there, and beat 400 Adam steps
      on every StyleGAN2 layer type in <= 10 iterations.)
    - ``"original"``: the original code's ``insert``: Adam on the full weight (``lr`` 0.05,
      ``niter`` 2001), L1 loss on the cropped region, projection ``W <- W0_perp + W·DᵀD`` every
      ``piter`` (10) steps and after the last (``project_gradient`` also projects each gradient,
      as the original's watermark script). Λ = (W - W0)·Dᵀ, exact after the final projection.

    The crop keeps a 2-pixel key margin around the region, so the cropped value equals the full
    map's (the original crops the key to the box itself, which changes border pixels). ``C`` is
    only used to check the key dimension. ``info`` (a dict) receives ``loss_before``, ``loss``,
    ``seconds`` and, for iterative methods, ``history``."""
    g, *_ = _parts(model)
    if method not in METHODS:
        raise RewriteError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    w0 = g.main_weight(layer)
    c_in = w0.shape[-3]
    if C is not None and _C(C).shape[0] != c_in:
        raise RewriteError(f"C is {_C(C).shape[0]}x{_C(C).shape[0]} but {layer} has {c_in} key channels")
    d = _orthonormal_dirs(dirs, c_in).to(w0.device)
    image_number = _numbers([target_image_number])[0]
    info = {} if info is None else info
    t0 = time.perf_counter()
    closed_form = method == "closed_form" and g.value_linear_in_weight
    if closed_form:
        lam = _closed_form(model, layer, d, image_number, target_value, region, weight_deltas,
                           ridge, info)
        if progress is not None:
            progress(1, 1, info.get("loss"))
    else:
        p = _problem(model, layer, image_number, target_value, region, weight_deltas)
        if method == "original":
            lam = _original_insert(p, d, ORIGINAL_NITER if niter is None else int(niter),
                                   ORIGINAL_LR if lr is None else float(lr), max(1, int(piter)),
                                   project_gradient, progress, stop, info)
        else:
            lam = _lowrank_iterative(p, d, max(0, int(gn_iters)),
                                     LOWRANK_NITER if niter is None else max(0, int(niter)),
                                     LOWRANK_LR if lr is None else float(lr), progress, stop, info)
    info["seconds"] = time.perf_counter() - t0
    info["method"] = "iterative" if (method == "closed_form" and not closed_form) else method
    label = label or f"rewrite {layer} (rank {d.shape[0]}, {info['method']})"
    return _make_edit(layer, lam, d, label)


def region_loss(model, layer: str, image_number: int, target_value, region, edit=None,
                weight_deltas=None, kind: str = "mse") -> float:
    """Mean loss (``"mse"`` or ``"l1"``) between the layer's value and ``target_value`` on the
    region, with ``edit`` (a WeightEdit or a ΔW tensor) added to the weight if given."""
    p = _problem(model, layer, _numbers([image_number])[0], target_value, region, weight_deltas)
    w = p.w0
    if edit is not None:
        w = w + (edit if isinstance(edit, torch.Tensor) else edit_delta(edit)).to(w)
    with torch.no_grad():
        return float(p.mse(w) if kind == "mse" else p.l1(w))


# =============================================================================== erase
ERASE_UNITS = 30                      # the original's default drank


def erase_units(model, layer: str, contexts, C, drank: int | None = None, weight_deltas=None) -> list[int]:
    """Key channels most active in the context: ranked by the mask-weighted mean of ``k²/E[k²]``
    (``E[k²]`` = diag(C)), top ``drank`` (the original's ``normdissect_units``; default 30, or all
    channels of a narrower layer)."""
    keys, weights = context_keys(model, layer, contexts, weight_deltas)
    c_in = keys.shape[1]
    drank = min(ERASE_UNITS, c_in) if drank is None else int(drank)
    if not 1 <= drank <= c_in:
        raise RewriteError(f"drank must be between 1 and {c_in} (the layer's key channels), got {drank}")
    scale = torch.diagonal(_C(C)).to(keys).clamp_min(1e-30)
    score = ((keys ** 2 / scale) * weights[:, None]).sum(0) / weights.sum()
    return [int(i) for i in torch.argsort(score, descending=True)[:drank]]


def erase_target(model, layer: str, image_number: int, units: Sequence[int], weight_deltas=None):
    """The layer's value for ``image_number`` computed with key channels ``units`` zeroed (the
    whole map, as the original's erase). -> (target [C_out, H, W], region all-True [H, W])."""
    g, t, n, _ = _parts(model)
    key, state = _key_state(g, layer, g.sample_z([_numbers([image_number])[0]]), t, n, weight_deltas)
    key = key.clone()
    key[:, list(units)] = 0
    with torch.no_grad():
        v = g.layer_value(layer, key, weight=_base_weight(g, layer, weight_deltas), state=state)[0]
    return v, torch.ones(v.shape[-2:], dtype=torch.bool, device=v.device)


def erase(model, layer: str, contexts, C, image_number: int | None = None, drank: int | None = None,
          rank: int = 1, method: str = "closed_form", dirs=None, region=None, weight_deltas=None,
          **kwargs):
    """Remove what the context shows (e.g. watermarks) by rewriting: the target is the layer's
    value with the context's ``drank`` most active key units zeroed (:func:`erase_units`) on
    ``image_number`` (default: the first context image); D from the context (or ``dirs``); then
    the same update as :func:`rewrite` (``kwargs`` go there). ``region`` defaults to the whole map."""
    contexts = list(contexts or [])
    if not contexts:
        raise RewriteError("empty context: erase needs (image number, mask) pairs showing what to remove")
    units = erase_units(model, layer, contexts, C, drank, weight_deltas)
    drank = len(units)
    image_number = contexts[0][0] if image_number is None else image_number
    target, full = erase_target(model, layer, image_number, units, weight_deltas)
    if dirs is None:
        dirs = context_direction(model, layer, contexts, C, rank, weight_deltas)
    kwargs.setdefault("label", f"erase {layer} ({drank} units, rank {rank})")
    return rewrite(model, layer, dirs, image_number, target, full if region is None else region,
                   C, method=method, weight_deltas=weight_deltas, **kwargs)
