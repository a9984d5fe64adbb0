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
    # An edit at layer4 re-runs only the layers after it from cached features.
    z = g.sample_z([0])
    state = g.run(g.start(z), stop="layer4")
    full = median_time(lambda: g.generate(z), reps)
    tail = median_time(lambda: g.finish(g.run(state.clone())), reps)
    rows.append(row("progan-256", "full forward", full * 1000, "ms", "batch 1"))
    rows.append(row("progan-256", "layers after layer4", tail * 1000, "ms", "batch 1"))
    rows.append(row("progan-256", "after-layer4 / full", tail / full, "ratio", "target <= 0.6"))
    return rows
