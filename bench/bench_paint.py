"""Paint-stroke latency on the default model: one masked stroke at the paint layer, batch 1."""
import torch

import core
from bench import median_time, row
from core.edits import EditStack, Renderer, UnitEdit


@torch.no_grad()
def run(quick: bool = False) -> list[dict]:
    reps = 5 if quick else 30
    model = core.load_model("default")
    layer = model.bundle.config.get("paint_layer", "layer4")
    c, h, w = model.features(model.sample_z([0]), layer).shape[1:]
    mask = torch.zeros(h, w)
    mask[h // 4:h // 2, w // 4:w // 2] = 1           # 1/16 of the image
    stroke = EditStack().push(UnitEdit(layer, list(range(10)), [3.0] * 10, mask=mask))
    z = model.sample_z([7])
    rows = [row("default", "full forward", median_time(lambda: model.generate(z), reps) * 1000, "ms",
                "batch 1")]
    for local in (False, True):
        r = Renderer(model, cache_layer=layer, local=local)
        t = median_time(lambda: r.render(z, stroke), reps)
        rows.append(row("default", f"stroke re-render ({'local window' if local else 'after layer'})",
                        t * 1000, "ms", "target <= 30 ms"))
    return rows
