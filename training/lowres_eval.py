"""Compare training states at a low resolution: is a run that spent its time at 16 px ahead of
one that grew to 64 px quickly, at the same CPU minutes? (the schedule lever of the bake-off)

    python -m training.lowres_eval --res 16 runs/gan_sched/state.pt runs/gan/state_4477.pt

Each state's EMA generator draws held-out latents at its current stage (``training.gan``'s
schedule, taken from the state's recipe); an output finer than ``--res`` is average-pooled to it,
as are the renders it is compared with. Measures, all at ``--res``:
- FSD of per-image class fractions (the Toytown 2 segmenter, on images nearest-upscaled back to
  64 px; renders get the same treatment, and the floor is two sets of renders);
- the two-sample classifier test of ``training.bakeoff`` (0.5 = indistinguishable).
Writes ``docs/eval/lowres_<res>px.json`` and ``docs/toytown2_lowres_<res>px.png`` (a row of
pooled renders, then a row per state).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.segmenter import load_segmenter
from training import gan
from training.bakeoff import renders, two_sample_accuracy
from training.quality import class_fractions, frechet

SEED = 200_000      # latents never used in training (gan.py draws its own from torch's RNG)


def pool(x: torch.Tensor, res: int) -> torch.Tensor:
    return F.avg_pool2d(x, x.shape[-1] // res) if x.shape[-1] > res else x


@torch.no_grad()
def draw(state_path: Path, res: int, n: int) -> tuple[torch.Tensor, dict]:
    """(``n`` samples pooled to ``res`` [n,3,res,res] in [-1,1], facts about the state)."""
    st = torch.load(state_path, map_location="cpu", weights_only=True)
    G = gan.GrowingGenerator(st["sizes"])
    G.load_state_dict(st["G_ema"])
    G.eval()
    last = st["recipe"][-1]
    stage_res, alpha, _ = gan.stage_at(gan.parse_schedule(last["schedule"], last["batch"]),
                                       int(st["step"]) - 1, last["fade"])
    if stage_res < res:
        raise SystemExit(f"{state_path} is still at {stage_res} px, below --res {res}")
    z = torch.from_numpy(np.random.RandomState(SEED).standard_normal((n, st["sizes"][0])).astype(np.float32))
    x = torch.cat([pool(G(z[i:i + 250], stage_res, alpha).clamp(-1, 1), res) for i in range(0, n, 250)])
    return x, {"step": int(st["step"]), "minutes": round(float(st["seconds"]) / 60, 1),
               "stage_px": stage_res, "images": int(st["images"])}


def fractions(seg, x: torch.Tensor) -> np.ndarray:
    up = F.interpolate(x, size=64, mode="nearest")
    return class_fractions(torch.cat([seg.segment(up[i:i + 500]) for i in range(0, len(up), 500)]),
                           len(seg.concepts))


def grid(rows: list[torch.Tensor], path: Path, n: int = 12):
    from PIL import Image
    x = torch.cat([F.interpolate(r[:n], size=64, mode="nearest") for r in rows])
    x = ((x + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    img = np.concatenate([np.concatenate(list(x[k * n:(k + 1) * n]), 1) for k in range(len(rows))], 0)
    Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.NEAREST).save(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("states", nargs="+", type=Path)
    p.add_argument("--res", type=int, default=16)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--segmenter", default="runs/segmenter_v2", type=Path)
    a = p.parse_args(argv)
    seg = load_segmenter(a.segmenter)
    real_a, real_b = pool(renders(1001, a.n), a.res), pool(renders(1002, a.n), a.res)
    fa, fb = fractions(seg, real_a), fractions(seg, real_b)
    results = {"floor": {"fsd": round(frechet(fa, fb), 3), "classifier_accuracy": round(
        two_sample_accuracy(pool(renders(1003, a.n), a.res), real_b), 3)}}
    rows = [real_a]
    for path in a.states:
        x, facts = draw(path, a.res, a.n)
        rows.append(x)
        results[str(path)] = {**facts, "fsd": round(frechet(fa, fractions(seg, x)), 3),
                              "classifier_accuracy": round(two_sample_accuracy(x, real_b), 3)}
        print(json.dumps({str(path): results[str(path)]}), flush=True)
    Path(f"docs/eval/lowres_{a.res}px.json").write_text(json.dumps(
        {"note": f"states compared at {a.res} px: samples (latents seed {SEED}) and renders (seeds "
                 f"1001-1003) average-pooled to {a.res} px; FSD on the segmenter's classes of "
                 f"images nearest-upscaled to 64 px", "results": results}, indent=1) + "\n")
    grid(rows, Path(f"docs/toytown2_lowres_{a.res}px.png"))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
