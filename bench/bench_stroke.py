"""Where a Paint stroke's time goes, in the app's own steps (issue #22), on the default model:
the editor value decoded from its PNG files (background + one layer, as the browser sends them),
the painted mask pooled to the paint layer, the edit chosen from the catalog, the before and
after renders, the editor's upscale to the display size, the PNG encoding of the images a stroke
returns (the editor's at the display size, the before/after and result at the model's size),
and the whole round trip of ``/paint_stroke`` through ``gradio_client`` (server in this process)."""
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import core.images
from bench import median_time, row
from demos.brush import EDITOR_SIZE as SIZE



def _editor_files(folder: Path) -> dict:
    bg, layer = folder / "bg.png", folder / "layer.png"
    Image.fromarray(np.full((SIZE, SIZE, 3), 128, np.uint8)).save(bg)
    arr = np.zeros((SIZE, SIZE, 4), np.uint8)
    arr[100:220, 140:260] = (0, 255, 0, 255)
    Image.fromarray(arr).save(layer)
    return {"background": str(bg), "layers": [str(layer)], "composite": str(bg)}


def run(quick: bool = False) -> list[dict]:
    from core.edits import EditStack
    from core.paint import paint_edit
    from core.settings import model_settings
    from demos.brush import RANKING, catalog_for, concept_setup, stroke_cells
    from demos.context import AppContext, display
    reps = 5 if quick else 20
    ctx = AppContext()
    model = ctx.model()
    layer = model_settings(model).paint_layer
    concept = concept_setup(ctx)[0][0]
    files = _editor_files(Path(tempfile.mkdtemp(prefix="bench_stroke_")))
    rend = ctx.renderer()
    z = model.sample_z([7])

    def decode():
        return {"background": np.asarray(Image.open(files["background"]).convert("RGB")),
                "layers": [np.asarray(Image.open(files["layers"][0]).convert("RGBA"))],
                "composite": None}
    ev = decode()
    cells = stroke_cells(ev, model, layer)
    cat = catalog_for(model, layer)
    edit = paint_edit(cat, layer, concept, cells, "draw", 10, RANKING)
    stack = EditStack().push(edit)
    after = rend.render(z, stack)[0].cpu()
    big, small = display(after, SIZE), core.images.to_pil(after)

    def png(im):
        buf = io.BytesIO()
        im.save(buf, format="png")
        return buf
    steps = [(f"decode the editor PNGs ({SIZE} px background + layer)", decode),
             ("painted mask pooled to the paint layer", lambda: stroke_cells(ev, model, layer)),
             ("choose the units (catalog)", lambda: paint_edit(cat, layer, concept, cells, "draw", 10, RANKING)),
             ("render before (cached state)", lambda: rend.render(z, EditStack())),
             ("render after", lambda: rend.render(z, stack)),
             (f"upscale the editor's image to {SIZE} px", lambda: display(after, SIZE)),
             (f"encode the editor's {SIZE} px PNG (sent twice: background, composite)", lambda: png(big)),
             (f"encode one {small.width} px PNG (sent three times: before, after, result)", lambda: png(small))]
    rows = [row("stroke", name, median_time(fn, reps) * 1000, "ms") for name, fn in steps]
    for im in (big, small):
        rows.append(row("stroke", f"one {im.width} px PNG", len(png(im).getvalue()) / 1000, "kB"))
    rows.append(row("stroke", "round trip /paint_stroke, one client", _round_trip(files, concept, reps) * 1000,
                    "ms", "target <= 150 ms (issue #22)"))
    return rows


def _round_trip(files, concept, reps) -> float:
    from gradio_client import Client, handle_file

    from demos import build_app
    from tests.conftest import close, launch
    demo = build_app()
    try:
        c = Client(launch(demo), verbose=False, download_files=False)
        c.predict("default", 7, api_name="/paint_load")
        ev = {"background": handle_file(files["background"]), "layers": [handle_file(files["layers"][0])],
              "composite": handle_file(files["background"]), "id": None}
        times = []
        for i in range(reps):
            c.predict(api_name="/paint_reset")
            t = time.perf_counter()
            c.predict(ev, concept, "Draw", 10, True, api_name="/paint_stroke")
            times.append(time.perf_counter() - t)
        c.close()
        return float(np.median(times))
    finally:
        close(demo)
