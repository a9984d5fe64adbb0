"""Train the embedded default GAN on Toytown 2 scenes, on CPU, growing it from 8 to 64 px.

    python -m training.gan --minutes 60          # resumes from runs/gan/state.pt, else from the
                                                 # committed compact checkpoint
    python -m training.device_gan --minutes 7    # the same recipe in one call on a GPU machine

Recipe (Progressive GAN, Karras et al. 2018): the generator of core.generators.progan (PixelNorm,
nearest upsampling, equalised learning rate) is trained at 8 px, then 16, 32 and 64 px, each new
resolution faded in over ``--fade`` steps through training-only to-RGB convs (``GrowingGenerator``;
only the ProGAN generator itself is exported). The residual discriminator with minibatch stddev
grows the same way from the other end. Adam, beta1 = 0; an exponential moving average of the
generator is what ships. channels_last; bf16 autocast only where the CPU has native bf16. No flips:
they would teach the model mirrored watermark text.

The default recipe is what the bake-off rounds chose (``python -m training.bakeoff``,
docs/eval/bakeoff*.json; ``python -m training.lowres_eval``, docs/eval/lowres_16px.json): the
non-saturating logistic loss with lazy R1 at gamma 1, no L1 term, and a **slow schedule** (1,500
steps at 8 px, 4,000 at 16 px, 1,500 at 32 px, then 64 px; each new resolution fades in over 400
steps; the 32 px stage was cut from 4,000 to 1,500 steps in session 9 so that 64 px gets time
within the 8-hour budget). At equal CPU time (121 min) it drew 16-px layouts at FSD 19 where the bake-off's quick
schedule (64 px after 440 steps) was at 73. The other recipes stay available: ``--l1-weight W
--regress-steps N`` (L1 regression of G(z) onto render(z), the renderer being a function of z,
first alone, then beside the adversarial loss), ``--loss relativistic --r2-gamma`` (RpGAN with
R1 + R2), ``--seg-weight`` (a per-pixel segmentation head on D trained on the renders' labels).

Costs on 2 CPU cores (AVX2, no native bf16; G 2.83 M parameters, D 2.95 M): an adversarial step
takes ~0.45 s at 8 px (batch 32), ~1.1 s at 16 px, ~1.5 s at 32 px and ~1.1 s at 64 px (batch 16).
``variety`` in the log is the mean per-pixel std over a generated batch (Toytown 2 renders: about
0.37 at 64 px); the ``raw_*.png`` grids show the un-averaged generator.

History. Toytown 1 (sessions 3-4, grainy data, narrower 32/64 px layers): 10,647 steps (218,352
images) in 169 min reached FSD 22.1 with blurry samples; every setting tried directly at 64 px
collapsed within ~1,000 steps, which is why training grows. Toytown 2 bake-off (14 min of 2-core
CPU each): FSD adversarial 228, relativistic 135 (but collapsing: variety 0.14 -> 0.07, loss_d
0.1), segmentation head 173, regression 144 with the most varied samples and the best watermark,
spire and grass units; all four still told apart from renders by a small CNN. Continuing the
regression run showed its L1 term kept samples blurry (FSD 73 at step 2,620 -> 109 at 4,477);
dropped, with R1 gamma 1, it went on to step 6,585. A fresh run on the slow schedule, compared at
16 px after the same 121 min, was far ahead (FSD 19 against 73) and became the main line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.generators.progan import ConvBlock, ProGANGenerator
from training.toytown import CLASSES, latents, render_latents

RUN_DIR = Path("runs/gan")
DEFAULT_SIZES = [128, 256, 256, 128, 48, 24]  # z, then channels at 4, 8, 16, 32, 64 px
D_CHANNELS = (16, 48, 128, 192, 256)          # discriminator at 64, 32, 16, 8, 4 px
SEG_RES = 16                                  # where the discriminator's segmentation head looks


# ----------------------------------------------------------------------------- data
class Data(NamedTuple):
    """Toytown scenes with what made them: latents [n,Z] float32, images uint8 [n,3,S,S] and
    label maps uint8 [n,S,S] (a scene is a function of its latent, see training.toytown)."""
    z: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor


def _render(seed: int, n: int, start: int, size: int):
    z = latents(seed, n, start)
    return (z, *render_latents(z, size))


def load_dataset(n: int, seed: int = 0, size: int = 64, cache_dir: Path = Path("runs"),
                 workers: int = 1) -> Data:
    """``n`` Toytown scenes, cached on disk after the first call. Scene i depends on (seed, i)
    alone, so ``workers`` processes render chunks of the same dataset."""
    path = cache_dir / f"toytown2_s{seed}_n{n}_{size}px.npz"
    if path.exists():
        with np.load(path) as f:
            z, images, labels = f["z"], f["images"], f["labels"]
    else:
        chunk = -(-n // max(1, workers))
        starts = list(range(0, n, chunk))
        args = ([seed] * len(starts), [min(chunk, n - s) for s in starts], starts, [size] * len(starts))
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                parts = list(pool.map(_render, *args))
        else:
            parts = [_render(*a) for a in zip(*args)]
        z, images, labels = (np.concatenate(p) for p in zip(*parts))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, z=z, images=images, labels=labels)
    return Data(torch.from_numpy(z), torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                torch.from_numpy(labels))


# ----------------------------------------------------------------------------- discriminator
class EqConv(nn.Module):
    """Conv with the equalised learning rate: weights ~ N(0,1), scaled at run time."""

    def __init__(self, c_in, c_out, k, padding=0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, k, k))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.scale = 1 / math.sqrt(c_in * k * k)
        self.padding = padding

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqLinear(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.scale = 1 / math.sqrt(c_in)

    def forward(self, x):
        return F.linear(x, self.weight * self.scale, self.bias)


class DBlock(nn.Module):
    """Two 3x3 convs and a 2x average-pool downsample, with a 1x1 residual path."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv1 = EqConv(c_in, c_in, 3, 1)
        self.conv2 = EqConv(c_in, c_out, 3, 1)
        self.skip = EqConv(c_in, c_out, 1)

    def forward(self, x):
        y = F.leaky_relu(self.conv1(x), 0.2)
        y = F.avg_pool2d(F.leaky_relu(self.conv2(y), 0.2), 2)
        return (y + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)


class Discriminator(nn.Module):
    """Residual discriminator that grows with the generator: one from-RGB 1x1 conv per resolution;
    at resolution ``res`` the image enters at the matching block, faded in from the half
    resolution's path while ``alpha`` < 1 (Progressive GAN)."""

    def __init__(self, resolution=64, channels=(16, 32, 64, 128, 192), seg_classes: int = 0):
        super().__init__()
        n_down = int(math.log2(resolution)) - 2
        chans = list(channels[:n_down + 1])
        self.resolution = resolution
        self.from_rgb = nn.ModuleDict({str(resolution >> i): EqConv(3, chans[i], 1) for i in range(n_down + 1)})
        self.blocks = nn.ModuleList([DBlock(chans[i], chans[i + 1]) for i in range(n_down)])
        c = chans[-1]
        self.final_conv = EqConv(c + 1, c, 3, 1)
        self.fc = EqLinear(c * 16, c)
        self.out = EqLinear(c, 1)
        # Optional per-pixel segmentation head on the 16x16 features (trained on the renders'
        # labels: an auxiliary task that makes D's features see objects, not only texture).
        self.seg = EqConv(chans[int(math.log2(resolution // SEG_RES))], seg_classes, 1) if seg_classes else None

    def forward(self, x, alpha: float = 1.0, segment: bool = False):
        """Realness logits [N,1]; with ``segment``, also class logits at 16x16 (None below 16 px)."""
        res = x.shape[-1]
        i = int(math.log2(self.resolution // res))
        h = F.leaky_relu(self.from_rgb[str(res)](x), 0.2)
        want_seg, segment = segment, segment and self.seg is not None
        seg = self.seg(h) if segment and res == SEG_RES else None
        if i < len(self.blocks):
            h = self.blocks[i](h)
            if alpha < 1:
                skip = F.leaky_relu(self.from_rgb[str(res // 2)](F.avg_pool2d(x, 2)), 0.2)
                h = torch.lerp(skip, h, alpha)
            for block in self.blocks[i + 1:]:
                if segment and h.shape[-1] == SEG_RES:
                    seg = self.seg(h)
                h = block(h)
        # Minibatch standard deviation (groups of 4) lets D see a lack of variety.
        n, c, hh, ww = h.shape
        g = min(4, n)
        s = h.float().reshape(g, -1, c, hh, ww).std(dim=0).mean(dim=(1, 2, 3))
        s = s.repeat(g).reshape(n, 1, 1, 1).expand(n, 1, hh, ww).to(h.dtype)
        h = F.leaky_relu(self.final_conv(torch.cat([h, s], 1)), 0.2)
        h = F.leaky_relu(self.fc(h.flatten(1)), 0.2)
        return (self.out(h), seg) if want_seg else self.out(h)


class GrowingGenerator(nn.Module):
    """The shipped ProGANGenerator plus a training-only to-RGB 1x1 conv for each lower
    resolution, so it can be trained from 4 px upwards. At the final resolution it is exactly
    ``self.g``; only ``self.g`` is exported."""

    def __init__(self, sizes):
        super().__init__()
        self.g = ProGANGenerator(sizes)
        res = [4 * 2 ** i for i in range(len(sizes) - 2)]
        self.to_rgb = nn.ModuleDict({str(r): ConvBlock(sizes[1 + i], 3, 1, 0, upsample=False, gain=1.0,
                                                       activate=False) for i, r in enumerate(res)})

    def rgb(self, x, res):
        return self.g.output(x) if res == self.g.resolution else self.to_rgb[str(res)](x)

    def forward(self, z, res: int | None = None, alpha: float = 1.0):
        res = res or self.g.resolution
        n = 2 * (int(math.log2(res)) - 1)  # layers 1-2 draw 4 px, each further pair doubles it
        state = self.g.start(z)
        for name in self.g.layers[:n - 2]:
            state = self.g.step(name, state)
        before = state.x
        for name in self.g.layers[n - 2:n]:
            state = self.g.step(name, state)
        out = self.rgb(state.x, res)
        if alpha < 1 and res > 4:
            low = F.interpolate(self.rgb(before, res // 2), scale_factor=2, mode="nearest")
            out = torch.lerp(low, out, alpha)
        return out


def parse_schedule(text: str, batch: int) -> list[tuple[int, int, int]]:
    """"8:400,16:1500,64:0:16" -> [(8, 400, batch), (16, 1500, batch), (64, 0, 16)]: resolution,
    steps (the last stage runs on) and optionally its own batch size."""
    stages = []
    for part in text.split(","):
        v = [int(x) for x in part.split(":")]
        if len(v) not in (2, 3):
            raise ValueError(f"bad schedule {text!r}: want res:steps[:batch],...")
        stages.append((v[0], v[1], v[2] if len(v) == 3 else batch))
    return stages


def stage_at(stages, step: int, fade: int) -> tuple[int, float, int]:
    """(resolution, fade-in alpha, batch) at a global step."""
    start = 0
    for k, (res, steps, batch) in enumerate(stages):
        if k == len(stages) - 1 or step < start + steps:
            alpha = 1.0 if k == 0 else min(1.0, (step - start + 1) / fade)
            return res, alpha, batch
        start += steps
    raise AssertionError


# ----------------------------------------------------------------------------- training
def save_grid(images: torch.Tensor, path: Path, nrow: int = 8):
    from PIL import Image
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    rows = [np.concatenate(list(x[i:i + nrow]), 1) for i in range(0, len(x) - len(x) % nrow, nrow)]
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def ema_update(ema: nn.Module, model: nn.Module, beta: float):
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters()):
            pe.lerp_(p, 1 - beta)


def train(args):
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    data = Data(*(t.to(device) for t in load_dataset(args.dataset_size, seed=args.data_seed,
                                                      size=args.resolution, workers=args.workers)))
    k = args.resolution // SEG_RES   # the label at the centre of each 16x16 cell
    labels16 = data.labels[:, k // 2::k, k // 2::k].long() if args.seg_weight else None
    print(f"dataset: {len(data.images)} renders at {args.resolution} px; training on {device}")

    sizes = DEFAULT_SIZES[:int(math.log2(args.resolution))]
    G = GrowingGenerator(sizes)
    G_ema = GrowingGenerator(sizes)
    G_ema.load_state_dict(G.state_dict())
    D = Discriminator(args.resolution, D_CHANNELS, seg_classes=len(CLASSES) if args.seg_weight else 0)
    stages = parse_schedule(args.schedule, args.batch)
    if stages[-1][0] != args.resolution:
        raise SystemExit(f"the schedule must end at --resolution {args.resolution}")
    for m in (G, G_ema, D):
        m.to(device, memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.0, 0.99), eps=1e-8)
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr_d or args.lr, betas=(0.0, 0.99), eps=1e-8)
    step, seconds, images, recipe = 0, 0.0, 0, []
    state_path = run / "state.pt"
    if not state_path.exists() and Path(args.resume_from).exists() and not args.fresh:
        # The committed compact checkpoint (weights only; Adam moments restart from zero).
        from safetensors import safe_open
        with safe_open(args.resume_from, framework="pt") as f:
            meta = f.metadata()
            parts = {"G": {}, "G_ema": {}, "D": {}}
            for k in f.keys():
                head, name = k.split(".", 1)
                parts[head][name] = f.get_tensor(k)
        G.load_state_dict(parts["G"]); G_ema.load_state_dict(parts["G_ema"]); D.load_state_dict(parts["D"])
        step, seconds = int(meta["step"]), float(meta["seconds"])
        images, recipe = int(meta["images"]), json.loads(meta["recipe"])
        print(f"resumed from {args.resume_from} at step {step} ({seconds / 60:.1f} min trained)")
    elif state_path.exists() and not args.fresh:
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        G.load_state_dict(st["G"]); G_ema.load_state_dict(st["G_ema"]); D.load_state_dict(st["D"])
        if "opt_g" in st:       # a state merged from a device run has no Adam moments
            opt_g.load_state_dict(st["opt_g"]); opt_d.load_state_dict(st["opt_d"])
        step, seconds = int(st["step"]), float(st["seconds"])
        images, recipe = int(st["images"]), list(st["recipe"])
        print(f"resumed at step {step} ({seconds / 60:.1f} min trained)")
    # the settings of each stretch of training, for the model card
    settings = {k: getattr(args, k) for k in ("lr", "lr_d", "r1_gamma", "r1_every", "batch", "schedule",
                                              "fade", "ema_kimg", "ema_rampup", "loss", "r2_gamma",
                                              "seg_weight", "l1_weight", "regress_steps")}
    if device.type != "cpu":      # recorded only off the CPU, so CPU recipes read as before
        settings["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    if not recipe or {k: v for k, v in recipe[-1].items() if k != "from_step"} != settings:
        recipe.append({"from_step": step, **settings})
    n_params = sum(p.numel() for p in G.g.parameters())
    print(f"G: sizes {sizes}, {n_params / 1e6:.2f} M parameters; D: "
          f"{sum(p.numel() for p in D.parameters()) / 1e6:.2f} M")

    fixed_z = torch.from_numpy(np.random.RandomState(123).standard_normal((32, sizes[0])).astype(np.float32)).to(device)

    def ema_beta(batch):
        # half-life ramps up with the images seen (as StyleGAN2-ADA): early EMA snapshots would
        # otherwise average generators that are still far apart (blurry samples)
        half_life = min(args.ema_kimg * 1000, max(1.0, images * args.ema_rampup))
        return 0.5 ** (batch / half_life)
    rng = torch.Generator(device).manual_seed(args.seed + step)
    t_end = time.time() + args.minutes * 60
    # --cpu-minutes: a budget of this process's CPU time (in minutes of all --threads busy), fair
    # between runs even when other work shares the machine (wall time is not)
    cpu_end = time.process_time() + args.cpu_minutes * 60 * args.threads if args.cpu_minutes else math.inf
    t_last = time.time()
    log = open(run / "log.txt", "a")

    def save_state():
        torch.save({"G": G.state_dict(), "G_ema": G_ema.state_dict(), "D": D.state_dict(),
                    "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "step": step,
                    "seconds": seconds, "sizes": sizes, "images": images, "recipe": recipe},
                   state_path.with_suffix(".tmp"))
        os.replace(state_path.with_suffix(".tmp"), state_path)
        from safetensors.torch import save_file
        save_file({k: v.detach().cpu().contiguous() for k, v in G_ema.g.state_dict().items()},
                  run / "generator_ema.safetensors")

    def real_batch(idx, res, alpha):
        x = data.images[idx].float() / 127.5 - 1
        x = F.avg_pool2d(x, args.resolution // res) if res < args.resolution else x
        if alpha < 1:  # fade the new detail in, as the generator's output is
            x = torch.lerp(F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest"), x, alpha)
        return x.contiguous(memory_format=torch.channels_last)

    def grid(model, res, alpha, path):
        with torch.no_grad():
            x = model(fixed_z, res, alpha)
        save_grid(F.interpolate(x, size=args.resolution, mode="nearest").cpu(), path)

    bf16 = args.bf16 if args.bf16 is not None else (
        device.type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported())
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def penalty(x, alpha):
        """Mean squared norm of D's gradient at ``x`` (R1 on reals, R2 on fakes)."""
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x, alpha).sum(), x, create_graph=True)
        return grad.pow(2).sum(dim=(1, 2, 3)).mean()

    def train_step(step, res, alpha, batch):
        idx = torch.randint(len(data.images), (batch,), generator=rng, device=device)
        real = real_batch(idx, res, alpha)
        # --regress: G(z) is pulled onto the scene its latent z draws (render(z) is a function of z)
        z = data.z[idx] if args.l1_weight else torch.randn(batch, sizes[0], generator=rng, device=device)
        adversarial = step >= args.regress_steps
        loss_d = r1 = torch.zeros((), device=device)
        with autocast:
            fake = G(z, res, alpha)  # one generated batch serves both updates
        if adversarial:
            # --- discriminator: real vs generated (+ the segmentation of reals), lazy R1 / R2
            with autocast:
                d_fake = D(fake.detach().float(), alpha)
                d_real, seg = D(real, alpha, segment=True)
                if args.loss == "relativistic":
                    loss_d = F.softplus(d_fake - d_real).mean()
                else:
                    loss_d = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
                if seg is not None:
                    loss_d = loss_d + args.seg_weight * F.cross_entropy(seg.float(), labels16[idx])
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            if step % args.r1_every == 0:
                r1 = penalty(real, alpha)
                reg = r1 * args.r1_gamma
                if args.r2_gamma:
                    reg = reg + penalty(fake, alpha) * args.r2_gamma
                (reg / 2 * args.r1_every).backward()
            opt_d.step()
        # --- generator: non-saturating (or relativistic) loss, plus L1 to its scene with --regress
        D.requires_grad_(False)  # no weight gradients for D in the G step (9% faster)
        with autocast:
            loss_g = torch.zeros((), device=device)
            if adversarial:
                d_fake = D(fake, alpha)
                loss_g = F.softplus(-(d_fake - d_real.detach()) if args.loss == "relativistic" else -d_fake).mean()
            if args.l1_weight:
                loss_g = loss_g + args.l1_weight * (fake.float() - real).abs().mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)
        ema_update(G_ema, G, ema_beta(batch))
        # variety: mean per-pixel std over the batch (a collapsing G drives it towards 0)
        return loss_d.item(), loss_g.item(), r1.item(), float(fake.detach().float().std(0).mean())

    def on_sigterm(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        while step < args.steps and time.time() < t_end and time.process_time() < cpu_end:
            t0 = time.time()
            res, alpha, batch = stage_at(stages, step, args.fade)
            loss_d, loss_g, r1, variety = train_step(step, res, alpha, batch)
            step += 1
            images += batch
            seconds += time.time() - t0
            if step % 50 == 0:
                dt = (time.time() - t_last) / 50
                t_last = time.time()
                msg = (f"step {step} {res}px loss_d {loss_d:.3f} loss_g {loss_g:.3f} r1 {r1:.3f} variety {variety:.3f} "
                       f"{dt:.2f}s/step {seconds / 60:.1f}min")
                print(msg, flush=True)
                log.write(msg + "\n")
                log.flush()
            if step % args.sample_every == 0:
                res, alpha, _ = stage_at(stages, step - 1, args.fade)
                grid(G_ema, res, alpha, run / f"samples_{step:06d}.png")
                grid(G, res, alpha, run / f"raw_{step:06d}.png")
            if step % args.save_every == 0:
                save_state()
    except KeyboardInterrupt:
        print("interrupted: saving")
    save_state()
    grid(G_ema, *stage_at(stages, max(step - 1, 0), args.fade)[:2], run / f"samples_{step:06d}.png")
    print(f"done: step {step}, {seconds / 60:.1f} min of training")


def state_metadata(st: dict) -> dict[str, str]:
    """What a weights-only checkpoint keeps of a training state besides the weights."""
    return {"step": str(st["step"]), "seconds": str(st["seconds"]), "images": str(st["images"]),
            "recipe": json.dumps(st["recipe"]), "sizes": json.dumps(st["sizes"])}


def export_resume(run_dir: Path, dest: Path):
    """Write the weights of a training state as one safetensors file (what gets committed), in
    float16: half the size in git, and resuming from rounded weights costs nothing measurable (the
    Adam moments restart from zero anyway)."""
    from safetensors.torch import save_file
    st = torch.load(run_dir / "state.pt", map_location="cpu", weights_only=True)
    tensors = {f"{part}.{k}": v.half().contiguous() for part in ("G", "G_ema", "D") for k, v in st[part].items()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, dest, metadata=state_metadata(st))
    print(f"wrote {dest} (step {st['step']})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", default=str(RUN_DIR))
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--dataset-size", type=int, default=100_000)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--schedule", default="8:1500,16:4000,32:1500,64:0:16",
                   help="res:steps per stage of progressive growing; the last stage runs until --steps/--minutes")
    p.add_argument("--fade", type=int, default=400, help="steps over which a new resolution fades in")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--lr-d", type=float, default=None, help="discriminator learning rate (default: --lr)")
    p.add_argument("--r1-gamma", type=float, default=1.0,
                   help="R1 weight (StyleGAN2-ADA's heuristic 0.0002 * res^2 / batch gives 0.026 at 64 px)")
    p.add_argument("--r1-every", type=int, default=8)
    p.add_argument("--ema-kimg", type=float, default=10.0, help="EMA half-life in thousands of images")
    p.add_argument("--ema-rampup", type=float, default=0.05,
                   help="the EMA half-life is at most this fraction of the images seen")
    p.add_argument("--loss", choices=("logistic", "relativistic"), default="logistic",
                   help="non-saturating logistic, or relativistic pairing (RpGAN)")
    p.add_argument("--r2-gamma", type=float, default=0.0, help="R2 weight (gradient penalty on fakes)")
    p.add_argument("--seg-weight", type=float, default=0.0,
                   help="weight of the discriminator's segmentation loss on reals (0: no head)")
    p.add_argument("--l1-weight", type=float, default=0.0,
                   help="regression: L1 between G(z) and the scene z draws (uses the data's latents)")
    p.add_argument("--regress-steps", type=int, default=0,
                   help="steps of pure regression (no discriminator) before the adversarial game")
    p.add_argument("--steps", type=int, default=10 ** 9)
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--cpu-minutes", type=float, default=None,
                   help="stop after this much CPU time (minutes of all --threads busy) in this run")
    p.add_argument("--sample-every", type=int, default=250)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, or cuda (see training/device_gan.py)")
    p.add_argument("--workers", type=int, default=2,
                   help="processes that render the dataset when it is not cached yet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on GPUs and on CPUs with native bf16; 10x slower on "
                        "AVX2-only ones)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--resume-from", default="training/checkpoints/gan_resume.safetensors",
                   help="compact committed checkpoint used when RUN_DIR has no state.pt")
    p.add_argument("--export-resume", action="store_true",
                   help="only write RUN_DIR/state.pt's weights to --resume-from and exit")
    args = p.parse_args(argv)
    if args.export_resume:
        export_resume(Path(args.run_dir), Path(args.resume_from))
    else:
        train(args)


if __name__ == "__main__":
    main()
