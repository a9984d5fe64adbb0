"""Where a Paint stroke's time goes, in the app's own steps (issue #22), on the default model:
the stroke's mask decoded from the data URL the brush canvas sends (``StrokeCanvas``), pooled
to the paint layer, the edit chosen from the catalog, the before and after renders, the canvas's
new image as a data URL, the PNGs of the before/after and result (all at the model's size), and
the whole round trip of ``/paint_stroke`` through ``gradio_client`` (server in this process)."""
import io
import time

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
    return rows


def _round_trip(url, concept, reps) -> float:
    from gradio_client import Client

    from demos import build_app
    from tests.conftest import close, launch
    demo = build_app()
    try:
        c = Client(launch(demo), verbose=False, download_files=False)
        c.predict("default", 7, api_name="/paint_load")
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
