"""Memory soak: clients use every tab for a fixed time while the server's RSS is sampled.

Is the server's memory bounded (caches filling to their limits) or does it leak? Each client
loops over the tabs' main actions (Explore grid, Paint load/stroke/undo, a Dissect unit, a
Watermarks removal, a Rewrite preset with toggle and undo, and every third loop a Photo inversion
and stroke), and starts a new session every third loop as new visitors do. The app runs in a
child process (``bench.bench_load.Server``), so the RSS read from /proc is the server's alone.

    python -m bench soak               # 2 clients, 10 minutes (--minutes 30 for a long one)
    python -m bench soak --quick       # 1 client, 3 minutes

Reported: RSS after the first loop (caches warm), its peak, its end, and the growth rate over the
second half of the run (least squares, MB per minute): bounded memory shows a rate near 0. At
half time and at the end, what the server holds: the soak's sessions and gr.State values, and per
model the Renderer's cache and the values kept with the model (``AppContext.cache_sizes``).
"""
from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np

from bench import row
from bench.bench_load import Payloads, Server, client, paint_concepts, rss_mb


def actions(source: str, settings, concepts: list[str], pay: Payloads, i: int, loop: int) -> list:
    """Client ``i``'s requests in loop ``loop``: one pass over the tabs."""
    from gradio_client import handle_file

    import demos.photo as photo
    n = 1000 * i + 7 * loop
    steps = [("/explore_show", (source, f"{n}-{n + 15}")),
             ("/paint_load", (source, n)),
             ("/paint_apply", (pay.mask((96, 256, 96, 256)), concepts[loop % len(concepts)], "Draw", 10)),
             ("/paint_undo", ()),
             ("/dissect_unit", (source, settings.paint_layer, (3 * loop + i) % 16)),
             ("/watermark_remove", (source, 5, "catalog ranking", False))]
    if settings.presets:
        name = settings.presets[loop % len(settings.presets)]
        steps += [("/rewrite_preset", (source, settings.rewrite_layer, settings.rewrite_rank, name)),
                  ("/rewrite_toggle", (source,)), ("/rewrite_undo", (source,))]
    if loop % 3 == 0:
        example = sorted(Path(photo.EXAMPLES_DIR).glob("*.jpg"))[(loop + i) % 2]
        steps += [("/photo_invert", (source, handle_file(str(example)))),
                  ("/photo_paint", (pay.mask((128, 320, 128, 320)), concepts[0], "Draw", 10))]
    return steps


def run(quick: bool = False, source: str = "default", minutes: float | None = None,
        n_clients: int | None = None) -> list[dict]:
    import core
    from core.settings import model_settings
    minutes = minutes or (3 if quick else 10)
    n_clients = n_clients or (1 if quick else 2)
    settings = model_settings(core.load_model(source))
    pay = Payloads()
    samples: list[tuple[float, float]] = []
    errors: list[str] = []
    loops = [0] * n_clients
    with Server(source) as srv:
        stop = threading.Event()
        t0 = time.time()

        held = {}

        def sample():
            while not stop.is_set():
                samples.append(((time.time() - t0) / 60, rss_mb(srv.proc.pid)))
                if "mid" not in held and samples[-1][0] >= minutes / 2:
                    held["mid"] = srv.stats("soak")
                stop.wait(10)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        clients = [client(srv.url) for _ in range(n_clients)]
        concepts = paint_concepts(clients[0])
        warm = {}

        def visitor(i: int):
            c = clients[i]
            while time.time() - t0 < minutes * 60:
                if loops[i] % 3 == 0:
                    c.session_hash = f"soak{i}-{uuid.uuid4()}"      # a new visitor
                for api, args in actions(source, settings, concepts, pay, i, loops[i]):
                    try:
                        c.predict(*args, api_name=api)
                    except Exception as e:  # noqa: BLE001 - counted and reported, the soak goes on
                        errors.append(f"{api}: {type(e).__name__}: {e}"[:200])
                loops[i] += 1
                if i == 0 and loops[i] == 1:
                    warm.update(t=(time.time() - t0) / 60, rss=rss_mb(srv.proc.pid))
        threads = [threading.Thread(target=visitor, args=(i,)) for i in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        sampler.join()
        end = rss_mb(srv.proc.pid)
        held["end"] = srv.stats("soak")
        for c in clients:
            c.close()
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    half = t >= t[-1] / 2
    slope = float(np.polyfit(t[half], rss[half], 1)[0]) if half.sum() >= 3 else float("nan")
    note = f"{n_clients} client(s), {minutes:g} min, {sum(loops)} loops over all tabs"
    return [
        row("soak", "RSS after the first loop", round(warm.get("rss", float("nan")), 1), "MB",
            f"at {warm.get('t', float('nan')):.1f} min: models, caches and code paths warm"),
        row("soak", "RSS peak", round(float(rss.max()), 1), "MB", note),
        row("soak", "RSS at the end", round(end, 1), "MB", note),
        row("soak", "RSS growth, second half", round(slope, 2), "MB/min",
            "least squares over the samples of the second half (every 10 s); ~0 = bounded"),
        row("soak", "errors", len(errors), "req", "; ".join(errors[:3]) or "none"),
    ] + [row("soak", f"held at {when}", _held(h), "", f"at {'half' if when == 'mid' else 'the end'} "
             "of the run: sessions / gr.State values of the soak's visitors; per model, the "
             "Renderer's cached states and traces (MB of tensors) and the values kept with it")
         for when, h in held.items()]


def _held(stats: dict) -> str:
    parts = [f"{stats['sessions']} sessions / {stats['states']} states"]
    for name, c in stats.get("caches", {}).items():
        r = c.get("renderer") or {}
        parts.append(f"{name}: {r.get('entries', 0)}/{r.get('max_entries', '?')} states + "
                     f"{r.get('traces', 0)} traces = {r.get('mb', 0)} MB; kept: "
                     f"{', '.join(c.get('memo') or []) or 'nothing'}")
    return "; ".join(parts)
