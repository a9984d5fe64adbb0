"""Recipe bake-off: train each candidate GAN recipe for the same CPU minutes on Toytown 2, then
measure them the same way.

    python -m training.bakeoff --minutes 14                  # all recipes, one after the other
    python -m training.bakeoff --only-eval                   # re-measure the runs already there
    python -m training.bakeoff --round continue --from-run runs/gan --minutes 8 --recipes l1_10,l1_1,l1_0.1
                                             # later rounds: variants continuing one trained state

Recipes (``RECIPES``; all grow 8 -> 64 px with the same schedule and widths):
- adversarial:  non-saturating logistic loss, lazy R1 (the recipe of Toytown 1, wider at 32/64 px);
- relativistic: relativistic pairing loss (RpGAN) with R1 and R2;
- seg_head:     adversarial + a per-pixel segmentation head on D, trained on the renders' labels;
- regress:      pure L1 regression of G(z) onto render(z) (the renderer is a function of z) up to
                64 px, then adversarial with the L1 term kept.

Measures (``evaluate``), each on the run's EMA generator at held-out image numbers 200,000+:
- FSD: Fréchet distance of per-image class fractions (the Toytown 2 segmenter) against renders;
- a two-sample classifier test: a small CNN trained for a fixed number of steps to tell samples
  from held-out renders, its accuracy on images it did not train on (0.5 = indistinguishable);
  it sees blur and texture, which FSD (class areas only) cannot;
- a quick dissection (IQR protocol, 500 samples) of layers 4, 6 and 8: the best unit IoU per
  concept; and the share of samples with a watermark against the data's.
Results go to ``runs/bakeoff/results.json`` and a table on stdout; ``docs/eval/bakeoff.json`` and
``docs/toytown2_bakeoff.png`` (data and each recipe's samples) are written for the model card.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from core.generators.progan import from_state_dict
from core.segmenter import load_segmenter
from training import gan
from training.quality import WATERMARK_MIN_FRACTION, best_concept_iou, class_fractions, frechet
from training.toytown import render_batch

OUT = Path("runs/bakeoff")
SCHEDULE = "8:80,16:160,32:200,64:0:16"
COMMON = ["--schedule", SCHEDULE, "--fade", "80", "--batch", "32", "--r1-gamma", "0.1",
          "--sample-every", "250", "--save-every", "250"]
NO_L1 = ["--l1-weight", "0", "--regress-steps", "0"]   # explicit, whatever training.gan's defaults
RECIPES = {
    "adversarial": NO_L1,
    "relativistic": NO_L1 + ["--loss", "relativistic", "--r2-gamma", "0.1"],
    "seg_head": NO_L1 + ["--seg-weight", "1"],
    "regress": ["--l1-weight", "10", "--regress-steps", "440"],
}
# Later rounds fork one trained state (``--from-run``) and continue it under each variant. Round 2
# (from step 2,620): how much of the L1 anchor the adversarial phase keeps. Round 3 (from step
# 4,4xx): without the anchor, with D regularised harder (R1 gamma 1) as the other lever against a
# discriminator that wins (loss_d ~0.3).
CONTINUATIONS = {
    "l1_10": ["--l1-weight", "10"],
    "l1_1": ["--l1-weight", "1"],
    "l1_0.1": ["--l1-weight", "0.1"],
    "l1_0": ["--l1-weight", "0"],
    "l1_0_r1_1": ["--l1-weight", "0", "--r1-gamma", "1"],
}
HELD_OUT = 200_000          # image numbers of the samples measured (never used elsewhere)
DISSECT_LAYERS = ("layer4", "layer6", "layer8")


@torch.no_grad()
def samples(g, n: int, start: int = HELD_OUT, batch: int = 250) -> torch.Tensor:
    out = []
    for s in range(start, start + n, batch):
        out.append(g(g.sample_z(range(s, min(s + batch, start + n)), 1)).clamp(-1, 1))
    return torch.cat(out)


def renders(seed: int, n: int) -> torch.Tensor:
    images, _ = render_batch(seed, n)
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def two_sample_accuracy(fake: torch.Tensor, real: torch.Tensor, steps: int = 600, seed: int = 0) -> float:
    """Held-out accuracy of a small CNN trained to tell ``fake`` from ``real`` (first 3/4 of each
    to train, the rest to test)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, 2, 1), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(32, 64, 3, 2, 1),
        torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(64, 128, 3, 2, 1), torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(128, 128, 3, 2, 1), torch.nn.LeakyReLU(0.2), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(128, 1))
    cut = len(fake) * 3 // 4
    x = torch.cat([fake[:cut], real[:cut]])
    y = torch.cat([torch.zeros(cut), torch.ones(cut)])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(x), (64,), generator=g)
        loss = F.binary_cross_entropy_with_logits(net(x[idx]).squeeze(1), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        xt, yt = torch.cat([fake[cut:], real[cut:]]), torch.cat([torch.zeros(len(fake) - cut), torch.ones(len(real) - cut)])
        return float(((net(xt).squeeze(1) > 0).float() == yt).float().mean())


def best_iou(g, seg, layers=DISSECT_LAYERS, n: int = 500) -> dict:
    """{concept: [best unit IoU over ``layers``, "layerK"]} by a quick IQR dissection."""
    from core.dissect import dissect
    return best_concept_iou(dissect(g, seg, layer, range(HELD_OUT, HELD_OUT + n), protocol="iqr",
                                    batch_size=100) for layer in layers)


def evaluate(run: Path, seg, n: int = 2000) -> dict:
    g = from_state_dict(load_file(run / "generator_ema.safetensors"), output_clamp=True).eval()
    state = torch.load(run / "state.pt", map_location="cpu", weights_only=True)
    t0 = time.time()
    fake = samples(g, n)
    real_a, real_b = renders(1001, n), renders(1002, n)
    labels = [seg.segment(x) for x in (fake, real_a, real_b)]
    k = len(seg.concepts)
    fs, fa, fb = (class_fractions(x, k) for x in labels)
    wm = seg.concept_index("watermark")

    def wm_share(lab):
        return round(float(((lab == wm).flatten(1).float().mean(1) >= WATERMARK_MIN_FRACTION).float().mean()), 4)
    return {
        "steps": int(state["step"]), "images": int(state["images"]),
        "minutes": round(float(state["seconds"]) / 60, 1),
        "fsd": round(frechet(fa, fs), 3), "fsd_floor": round(frechet(fa, fb), 3),
        "classifier_accuracy": round(two_sample_accuracy(fake, real_b), 3),
        "classifier_accuracy_floor": round(two_sample_accuracy(renders(1003, n), real_b), 3),
        "watermark_share_samples": wm_share(labels[0]), "watermark_share_renders": wm_share(labels[1]),
        "best_unit_iou": best_iou(g, seg),
        "eval_seconds": round(time.time() - t0),
    }


def comparison_grid(runs, path: Path, n: int = 12):
    """One row of data and one row per run directory (their samples at the same image numbers)."""
    from PIL import Image
    rows = [renders(1001, n)]
    for run in runs:
        g = from_state_dict(load_file(run / "generator_ema.safetensors"), output_clamp=True).eval()
        rows.append(samples(g, n))
    x = torch.cat(rows)
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    grid = np.concatenate([np.concatenate(list(x[r * n:(r + 1) * n]), 1) for r in range(len(rows))], 0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(path)


def table(results: dict) -> str:
    concepts = list(dict.fromkeys(c for r in results.values() for c in r["best_unit_iou"]))
    head = ["recipe", "steps", "wall min", "FSD", "2-sample acc", "wm samples/data"] + concepts
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        lines.append("| " + " | ".join(
            [name, str(r["steps"]), str(r["minutes"]), f"{r['fsd']:.2f}", f"{r['classifier_accuracy']:.3f}",
             f"{r['watermark_share_samples']:.3f}/{r['watermark_share_renders']:.3f}"]
            + [f"{r['best_unit_iou'].get(c, [0.0])[0]:.2f}" for c in concepts]) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=14,
                   help="CPU budget per recipe, in minutes of both cores busy (fair under load)")
    p.add_argument("--recipes", default=None, help="comma-separated (default: all of the round's)")
    p.add_argument("--round", default="scratch", choices=("scratch", "continue"),
                   help="scratch: RECIPES from nothing; continue: CONTINUATIONS of --from-run")
    p.add_argument("--from-run", type=Path, default=Path("runs/gan"))
    p.add_argument("--segmenter", default="runs/segmenter_v2", type=Path)
    p.add_argument("--only-eval", action="store_true")
    a = p.parse_args(argv)
    fresh = a.round == "scratch"
    variants = RECIPES if fresh else CONTINUATIONS
    names = a.recipes.split(",") if a.recipes else list(variants)
    # a round of continuations is named by the step it starts from
    start_step = None if fresh else int(torch.load(a.from_run / "state.pt", map_location="cpu",
                                                   weights_only=True)["step"])
    out = OUT if fresh else OUT / f"from_{start_step}"
    seg = load_segmenter(a.segmenter)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if not fresh and "start" not in results:
        results["start"] = {"flags": [], **evaluate(a.from_run, seg)}
    for name in names:
        run = out / name
        flags = (COMMON + ["--fresh"] if fresh else COMMON) + variants[name]
        if not a.only_eval:
            if not fresh:   # every variant continues the same state, Adam moments included
                run.mkdir(parents=True, exist_ok=True)
                shutil.copy(a.from_run / "state.pt", run / "state.pt")
            gan.main(["--run-dir", str(run), "--cpu-minutes", str(a.minutes)] + flags)
        results[name] = {"flags": flags, **evaluate(run, seg)}
        out.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1))
        print(json.dumps({name: results[name]}), flush=True)
    print(table(results))
    suffix = "" if fresh else f"_from_{start_step}"
    comparison_grid([a.from_run if n == "start" else out / n for n in results],
                    Path(f"docs/toytown2_bakeoff{suffix}.png"))
    note = (f"each recipe trained from scratch on Toytown 2 for {a.minutes} min of 2-core CPU time" if fresh else
            f"each variant continued the same state (start: step {results['start']['steps']}) for {a.minutes} "
            f"min of 2-core CPU time")
    Path(f"docs/eval/bakeoff{suffix}.json").write_text(json.dumps(
        {"note": f"{note}; samples are image numbers {HELD_OUT}+; renders are seeds 1001-1003 (never trained on)",
         "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
