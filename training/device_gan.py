"""Train the default GAN on a GPU in one device call, then bring the weights home.

The CPU recipe (``python -m training.gan``) spent its 3-hour budget on 218k images; an H200 sees
that many in well under a minute. On a session that has a device machine (the ``device`` tool's
``status`` says so), one call does the whole run:

    run(command="PYTHONUNBUFFERED=1 python3 -m training.device_gan --minutes 7 --out $OUT",
        timeout_s=600)

It renders the dataset with ``--workers`` processes (scene i depends on the seed and i alone, so
it is the dataset a CPU run renders), times a few steps at each resolution, turns ``--minutes``
into a growing schedule that gives each resolution its share of the time (``SHARES``), trains
from scratch with the CPU recipe's settings at batch 64, and writes to ``--out``: the weights as
three safetensors files (G, G_ema, D: each under the tool's 16 MiB per file), the last sample
grids, the log and ``device_gan.json`` (timings, schedule, steps). Back here:

    python -m training.device_gan --merge DIR    # DIR: where the call's files landed

writes ``runs/gan/state.pt`` (weights, steps, recipe; Adam restarts if training goes on),
``runs/gan/generator_ema.safetensors`` and the committed compact checkpoint, after which
``python -m training.rebuild`` rebuilds all the bundle ships, as after a CPU run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from training import gan

RESOLUTIONS = (8, 16, 32, 64)
SHARES = (0.05, 0.15, 0.25, 0.55)      # of the training time, per resolution (64 px: the rest)
PARTS = ("G", "G_ema", "D")
CALIBRATION_IMAGES = 4096              # step times do not depend on the dataset's size


def plan(seconds_per_step: dict[int, float], minutes: float) -> tuple[str, int]:
    """(schedule, fade) giving each resolution its share of ``minutes``; fades take half of the
    shortest stage that fades in."""
    steps = {r: max(1, int(minutes * 60 * share / seconds_per_step[r]))
             for r, share in zip(RESOLUTIONS, SHARES)}
    schedule = ",".join(f"{r}:{steps[r]}" for r in RESOLUTIONS[:-1]) + f",{RESOLUTIONS[-1]}:0"
    return schedule, max(1, min(steps[r] for r in RESOLUTIONS[1:-1]) // 2)


def _common(args, run: Path, images: int | None = None) -> list[str]:
    return ["--run-dir", str(run), "--device", args.device, "--batch", str(args.batch),
            "--dataset-size", str(images or args.dataset_size), "--workers", str(args.workers),
            "--sample-every", "1000", "--save-every", "2000", "--fresh"]


def calibrate(args, run: Path, short: int = 10, long: int = 40) -> dict[int, float]:
    """Seconds per step at each resolution: the difference of a long and a short run (model
    building and sample grids cancel out), after one warm-up run (CUDA's start-up would not)."""
    out = {}
    gan.main(_common(args, run, CALIBRATION_IMAGES) + ["--schedule", "64:0", "--steps", "2"])
    for r in RESOLUTIONS:
        times = []
        for n in (short, long):
            sched = f"{r}:{n + 1},64:0" if r < 64 else "64:0"
            t = time.perf_counter()
            gan.main(_common(args, run, CALIBRATION_IMAGES) + ["--schedule", sched, "--steps", str(n)])
            times.append(time.perf_counter() - t)
        out[r] = max(1e-4, (times[1] - times[0]) / (long - short))
        print(f"calibration: {r} px {1000 * out[r]:.1f} ms/step", flush=True)
    shutil.rmtree(run, ignore_errors=True)
    return out


def train_on_device(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    gan.load_dataset(args.dataset_size, seed=0, workers=args.workers)     # render once, cached
    rendered = time.perf_counter() - t0
    timing = calibrate(args, Path(args.run_dir + "_calibration"))
    schedule, fade = plan(timing, args.minutes)
    print(f"schedule {schedule}, fade {fade}", flush=True)
    run = Path(args.run_dir)
    gan.main(_common(args, run) + ["--schedule", schedule, "--fade", str(fade),
                                   "--minutes", str(args.minutes)])
    st = write_parts(run, out)
    grids = sorted(run.glob("samples_*.png"))[-1:] + sorted(run.glob("raw_*.png"))[-1:]
    for path in grids + [run / "log.txt"]:
        shutil.copy(path, out / path.name)
    report = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else args.device,
              "render_seconds": round(rendered, 1), "ms_per_step": {r: round(1000 * s, 2) for r, s in timing.items()},
              "schedule": schedule, "fade": fade, "steps": st["step"], "images": st["images"],
              "train_minutes": round(st["seconds"] / 60, 2), "total_seconds": round(time.perf_counter() - t0)}
    (out / "device_gan.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


def write_parts(run: Path, out: Path) -> dict:
    """A training state's weights as one safetensors file per network, with its steps, images,
    seconds, recipe and sizes in each file's metadata. Returns the state."""
    st = torch.load(run / "state.pt", map_location="cpu", weights_only=True)
    meta = gan.state_metadata(st)
    for part in PARTS:
        save_file({k: v.contiguous() for k, v in st[part].items()}, out / f"resume_{part}.safetensors",
                  metadata=meta)
    return st


def merge(src: Path, run: Path, compact: Path) -> None:
    """Turn a device run's files into a training state here (see the module docstring)."""
    parts, meta = {}, None
    for part in PARTS:
        path = src / f"resume_{part}.safetensors"
        if not path.exists():
            raise SystemExit(f"{path} is missing: pass the folder the device call's files landed in")
        with safe_open(str(path), framework="pt") as f:
            parts[part] = {k: f.get_tensor(k) for k in f.keys()}
            meta = meta or f.metadata()
    state = {**parts, "step": int(meta["step"]), "seconds": float(meta["seconds"]),
             "images": int(meta["images"]), "recipe": json.loads(meta["recipe"]),
             "sizes": json.loads(meta["sizes"])}
    run.mkdir(parents=True, exist_ok=True)
    torch.save(state, run / "state.pt")
    g_ema = gan.GrowingGenerator(state["sizes"])
    g_ema.load_state_dict(parts["G_ema"])
    save_file({k: v.contiguous() for k, v in g_ema.g.state_dict().items()}, run / "generator_ema.safetensors")
    gan.export_resume(run, compact)
    print(f"{run}/state.pt: step {state['step']:,}, {state['images']:,} images, "
          f"{state['seconds'] / 60:.1f} min on {state['recipe'][-1].get('device', 'CPU')}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=7.0, help="training time after calibration")
    p.add_argument("--out", default="runs/device_out")
    p.add_argument("--run-dir", default="runs/gan_device")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dataset-size", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--merge", type=Path, help="bring a device run's files (this folder) home")
    p.add_argument("--merge-into", type=Path, default=gan.RUN_DIR)
    p.add_argument("--compact", type=Path, default=Path("training/checkpoints/gan_resume.safetensors"))
    a = p.parse_args(argv)
    if a.merge:
        merge(a.merge, a.merge_into, a.compact)
    else:
        train_on_device(a)


if __name__ == "__main__":
    sys.exit(main())
