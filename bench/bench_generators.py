"""Forward time of full-size generators on CPU (random weights, real shapes)."""
import torch

from bench import median_time, row
from core.generators.progan import ProGANGenerator
from core.generators.stylegan2 import StyleGAN2Generator, channel_table

PROGAN_256 = [512, 512, 512, 512, 256, 128, 64, 32]


@torch.no_grad()
def run(quick: bool = False) -> list[dict]:
    reps = 2 if quick else 5
    rows = []
    g = ProGANGenerator(PROGAN_256).eval()
    sg = StyleGAN2Generator(size=256, style_dim=512, n_mlp=8, channels=channel_table(256, 2)).eval()
    for batch in (1, 8):
        z = g.sample_z(range(batch))
        t = median_time(lambda: g.generate(z), reps)
        rows.append(row("progan-256", f"forward batch {batch}", t / batch * 1000, "ms/img"))
        t = median_time(lambda: sg.generate(z, noise="zero"), max(1, reps - 2))
        rows.append(row("stylegan2-256", f"forward batch {batch}", t / batch * 1000, "ms/img",
                        "channel multiplier 2"))
    # An edit at layer4 re-runs only the layers after it from cached features; a masked stroke
    # (2x2 of the 8x8 cells = 1/16 of the image) re-runs only the window it can reach.
    z = g.sample_z([0])
    state = g.run(g.start(z), stop="layer4")
    trace = g.trace_after(g.run(g.start(z), stop="layer3"))
    x = trace["layer4"].clone()
    x[:, :16, 3:5, 3:5] = 5.0
    full = median_time(lambda: g.generate(z), reps)
    tail = median_time(lambda: g.finish(g.run(state.clone())), reps)
    local = median_time(lambda: g.rerun_region(trace, "layer4", x, (3, 5, 3, 5)), reps)
    rows.append(row("progan-256", "full forward", full * 1000, "ms", "batch 1"))
    rows.append(row("progan-256", "layers after layer4", tail * 1000, "ms", "batch 1"))
    rows.append(row("progan-256", "after-layer4 / full", tail / full, "ratio"))
    rows.append(row("progan-256", "layer4 stroke (1/16 image), local", local * 1000, "ms", "batch 1"))
    rows.append(row("progan-256", "layer4 stroke local / full", local / full, "ratio", "target <= 0.6"))
    return rows
