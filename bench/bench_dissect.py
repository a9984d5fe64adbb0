"""Dissection of the default model's paint layer: time split and bounded memory."""
import resource
import time

import core
from bench import row
from core.dissect import dissect
from core.segmenter import load_segmenter


def run(quick: bool = False) -> list[dict]:
    model = core.load_model("default")
    seg = load_segmenter(model.bundle.path)
    layer = model.bundle.config.get("paint_layer", "layer4")
    rows = []
    for n in ((200,) if quick else (1000, 10000)):
        t = time.perf_counter()
        cat = dissect(model, seg, layer, range(n))
        total = time.perf_counter() - t
        tm = cat["timing"]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows += [row("dissect", f"{layer} x {n} samples", total, "s", "target <= 60 s for 1,000"),
                 row("dissect", f"  generate / segment / stats ({n})",
                     f"{tm['generate_s']:.1f} / {tm['segment_s']:.1f} / {tm['stats_s']:.1f}", "s"),
                 row("dissect", f"  peak RSS after {n}", peak, "MiB", "flat in N = bounded")]
    return rows
