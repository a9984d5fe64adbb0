"""Where a Paint stroke's time goes, in the app's own steps (issue #22), on the default model:
the stroke's mask decoded from the data URL the brush canvas sends (``StrokeCanvas``), pooled
to the paint layer, the edit chosen from the catalog, the before and after renders, the canvas's
new image as a data URL, the PNGs of the before/after and result (all at the model's size), and
the whole round trip of ``/paint_stroke`` through ``gradio_client`` (server in this process)."""
import io
import tempfile
import time
from pathlib import Path

import numpy as np

import core.images
from bench import median_time, row
from demos.brush import MASK_SIZE as SIZE


def _stroke_url() -> str:
    from demos.stroke_canvas import mask_url
    m = np.zeros((SIZE, SIZE), bool)
    m[50:110, 70:130] = True
    return mask_url(m)


def run(quick: bool = False) -> list[dict]:
    from core.edits import EditStack
    from core.paint import paint_edit
    from core.settings import model_settings
    from demos.brush import RANKING, catalog_for, concept_setup, stroke_cells
    from demos.context import AppContext
    from demos.stroke_canvas import decode_mask, image_url
    reps = 5 if quick else 20
    ctx = AppContext()
    model = ctx.model()
    layer = model_settings(model).paint_layer
    concept = concept_setup(ctx)[0][0]
    url = _stroke_url()
    rend = ctx.renderer()
    z = model.sample_z([7])
    mask = decode_mask(url)
    cells = stroke_cells(mask, model, layer)
    cat = catalog_for(ctx, model, layer)
    edit = paint_edit(cat, layer, concept, cells, "draw", 10, RANKING)
    stack = EditStack().push(edit)
    after = rend.render(z, stack)[0].cpu()
    small = core.images.to_pil(after)

    def png(im):
        buf = io.BytesIO()
        im.save(buf, format="png")
        return buf
    steps = [(f"decode the stroke's mask ({SIZE} px data URL, {len(url) / 1000:.1f} kB)",
              lambda: decode_mask(url)),
             ("painted mask pooled to the paint layer", lambda: stroke_cells(mask, model, layer)),
             ("choose the units (catalog)", lambda: paint_edit(cat, layer, concept, cells, "draw", 10, RANKING)),
             ("render before (cached state)", lambda: rend.render(z, EditStack())),
             ("render after", lambda: rend.render(z, stack)),
             (f"the canvas's new image as a {small.width} px data URL", lambda: image_url(small)),
             (f"encode one {small.width} px PNG (three times: before, after, result)", lambda: png(small))]
    rows = [row("stroke", name, median_time(fn, reps) * 1000, "ms") for name, fn in steps]
    rows.append(row("stroke", f"one {small.width} px PNG", len(png(small).getvalue()) / 1000, "kB"))
    rows.append(row("stroke", "round trip /paint_stroke, one client", _round_trip(url, concept, reps) * 1000,
                    "ms", "target <= 150 ms (issue #22)"))
    big = _progan_256_bundle(Path(tempfile.mkdtemp(prefix="bench_stroke_256_")) / "progan256")
    rows.append(row("stroke", "round trip /paint_stroke, 256 px ProGAN, one client",
                    _round_trip(url, "tree", reps, source=str(big)) * 1000, "ms",
                    "gandissect layout, random weights, paint layer layer4; target <= 300 ms (issue #22)"))
    return rows


def _progan_256_bundle(folder: Path) -> Path:
    """A 256 px ProGAN in the layout of gandissect's LSUN models (random weights) as a bundle
    with paint layer layer4 (8x8) and a catalog giving 'tree' 10 units: what Paint needs to run
    on a real-size model. Its time does not depend on the weights."""
    import json

    import torch

    from bench.bench_generators import PROGAN_256
    from core.bundle import save_bundle
    from core.generators.progan import ProGANGenerator
    torch.manual_seed(0)
    folder = save_bundle(ProGANGenerator(PROGAN_256).eval(), folder, name="progan256",
                         extra_config={"paint_layer": "layer4"})
    units = [{"unit": u, "label": "tree", "iou": 0.2, "quantile_99": 3.0} for u in range(512)]
    cat = {"layer": "layer4", "units": units, "concept_list": ["tree"],
           "concepts": {"tree": [{"unit": u, "iou": 0.2} for u in range(10)]}}
    (folder / "catalog").mkdir()
    (folder / "catalog" / "layer4.json").write_text(json.dumps(cat))
    return folder


def _round_trip(url, concept, reps, source: str = "default") -> float:
    from gradio_client import Client

    from demos import build_app
    from demos.context import AppContext
    from tests.conftest import close, launch
    demo = build_app(AppContext(default_source=source))
    try:
        c = Client(launch(demo), verbose=False, download_files=False)
        c.predict(source, 7, api_name="/paint_load")
        times = []
        for i in range(reps):
            c.predict(api_name="/paint_reset")
            t = time.perf_counter()
            c.predict(url, concept, "Draw", 10, True, api_name="/paint_stroke")
            times.append(time.perf_counter() - t)
        c.close()
        return float(np.median(times))
    finally:
        close(demo)
