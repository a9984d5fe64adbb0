"""Sessions under load: concurrent ``gradio_client`` sessions each get bit-for-bit what they get
alone, a class of clients painting while one runs a photo inversion, a full queue answers with a
clear message, and memory after many sessions stays bounded (their ``gr.State`` is freed after its
time-to-live).

The app runs in a child process (``python -m bench.bench_load --serve ...``) with the app's own
QUEUE and launch settings, so the RSS we read from /proc is the server's alone. The child answers
``stats PREFIX`` on stdin with how many sessions (and live gr.State values) Gradio holds for
session ids starting with PREFIX.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from bench import row
from demos.settings import TORCH_THREADS

REPO = Path(__file__).resolve().parent.parent
SIZE = 512                       # masks and mark editors are given at this size


# ------------------------------------------------------------------ the server (child process)
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int) -> float:
    """CPU seconds a process has used (user + system, /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS from /proc; psutil may not be installed)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def serve(port: int, source: str, max_size: int | None) -> None:
    """Child: build the app as app.py does, launch it, answer ``stats PREFIX`` lines on stdin
    (sessions and gr.State values held for session ids starting with PREFIX, and what the shared
    caches hold: ``AppContext.cache_sizes``)."""
    import gradio.networking

    from demos import build_app
    from demos.context import AppContext
    from demos.settings import QUEUE, launch_options, use_torch_threads
    use_torch_threads()               # as app.py does
    # Gradio's own reachability check gives up after 3-s HEADs, which a busy machine misses;
    # the parent waits for the page itself
    gradio.networking.url_ok = lambda url: True
    ctx = AppContext(default_source=source)
    demo = build_app(ctx)
    queue = {**QUEUE, **({"max_size": max_size} if max_size else {})}
    demo.queue(**queue).launch(server_name="127.0.0.1", server_port=port, quiet=True,
                               prevent_thread_lock=True, **launch_options())
    print(json.dumps({"url": demo.local_url, "queue": queue}), flush=True)
    for line in sys.stdin:
        cmd, _, prefix = line.strip().partition(" ")
        if cmd != "stats":
            break
        gc.collect()
        held = [s for h, s in list(demo.state_holder.session_data.items()) if h.startswith(prefix)]
        print(json.dumps({"sessions": len(held), "states": sum(len(s.state_data) for s in held),
                          "caches": ctx.cache_sizes()}), flush=True)
    demo.close()


class Server:
    """The app in a child process; ``ttl`` sets PWN_STATE_TTL (the tabs' gr.State lifetime),
    ``threads`` PWN_TORCH_THREADS."""

    def __init__(self, source: str = "default", ttl: float | None = None,
                 max_size: int | None = None, timeout: float = 600, threads: int | None = None):
        env = dict(os.environ)
        if ttl is not None:
            env["PWN_STATE_TTL"] = str(ttl)
        if threads is not None:
            env["PWN_TORCH_THREADS"] = str(threads)
        cmd = [sys.executable, "-m", "bench.bench_load", "--serve", "--port", str(free_port()),
               "--source", source] + (["--max-size", str(max_size)] if max_size else [])
        t = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.source = source
        info = self._reply(timeout)
        self.url, self.queue = info["url"], info["queue"]
        self.start_s = time.perf_counter() - t

    def _reply(self, timeout: float) -> dict:
        result = {}

        def read():
            for line in self.proc.stdout:      # Gradio may print other lines first
                if line.startswith("{"):
                    result.update(json.loads(line))
                    return
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not result:
            self.close()
            raise RuntimeError(f"the app server gave no answer within {timeout:.0f} s")
        return result

    def stats(self, prefix: str = "") -> dict:
        self.proc.stdin.write(f"stats {prefix}\n")
        self.proc.stdin.flush()
        return {**self._reply(120), "rss_mb": rss_mb(self.proc.pid)}

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------ clients
def client(url: str):
    """A client that reads output files from the server's (local) paths instead of downloading."""
    from gradio_client import Client
    _reuse_ssl_contexts()
    return Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 600})


def _reuse_ssl_contexts() -> None:
    """gradio_client opens two httpx clients per request, each building a TLS context (~35 ms of
    CPU, even for http://); a browser does nothing of the kind. The bench's clients share the
    server's 2 cores, so they reuse one context instead of taking the server's CPU."""
    import functools
    import ssl
    if not hasattr(ssl.create_default_context, "cache_info"):
        ssl.create_default_context = functools.lru_cache(maxsize=8)(ssl.create_default_context)


def paint_concepts(c) -> list[str]:
    """The concepts the Paint tab's picker offers (from the served config)."""
    for comp in c.config["components"]:
        props = comp.get("props", {})
        if props.get("elem_id") == "paint_concept":
            return [choice[1] for choice in props["choices"]]
    raise RuntimeError("the app has no Paint concept picker (elem_id paint_concept)")


class Payloads:
    """Stroke payloads of rectangles ``(y0, y1, x0, x1)`` at SIZE px: brush masks (data URLs),
    and editor values (PNG files written once: a grey background and one RGBA layer)."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="bench_load_"))
        self._files: dict = {}

    def _png(self, key, arr) -> str:
        if key not in self._files:
            path = self.dir / f"{len(self._files)}.png"
            Image.fromarray(arr).save(path)
            self._files[key] = str(path)
        return self._files[key]

    def mask(self, rect) -> str:
        """A brush canvas's value (``StrokeCanvas``): the rectangle as a PNG data URL."""
        from demos.stroke_canvas import mask_url
        m = np.zeros((SIZE, SIZE), bool)
        y0, y1, x0, x1 = rect
        m[y0:y1, x0:x1] = True
        return mask_url(m)

    def editor(self, rect) -> dict:
        from gradio_client import handle_file
        bg = handle_file(self._png("bg", np.full((SIZE, SIZE, 3), 128, np.uint8)))
        arr = np.zeros((SIZE, SIZE, 4), np.uint8)
        y0, y1, x0, x1 = rect
        arr[y0:y1, x0:x1] = (0, 255, 0, 255)
        layer = handle_file(self._png(tuple(rect), arr))
        return {"background": bg, "layers": [layer], "composite": bg, "id": None}


def script(i: int, model_id: str, concepts: list[str], pay: Payloads, watermark: bool) -> list:
    """Client ``i``'s requests: load its own image, two strokes (own concepts, masks, modes,
    strengths), undo; odd clients also mark a region in the Watermark tab."""
    a, b = concepts[i % len(concepts)], concepts[(i + 3) % len(concepts)]
    y, x = (40 * i) % 320, (72 * i) % 320
    steps = [("/paint_load", (model_id, 17 * i + 3)),
             ("/paint_apply", (pay.mask((y, y + 160, x, x + 160)), a, "Draw", 4 + (5 * i) % 25)),
             ("/paint_apply", (pay.mask((400 - y, 500 - y, 300, 480)), b,
                               "Remove" if i % 2 else "Draw", 10)),
             ("/paint_undo", ())]
    if watermark and i % 2:
        steps.append(("/watermark_mark_pick", (model_id, 17 * i + 3,
                                               pay.editor((x, x + 96, y, y + 96)))))
    return steps


def digest(x):
    """An output with every image replaced by a hash of its decoded pixels (paths and URLs may
    differ between runs; the pixels must not)."""
    if isinstance(x, dict) and "path" in x and "mime_type" in x:
        with Image.open(x["path"]) as im:
            arr = np.asarray(im)
        return f"{hashlib.sha256(arr.tobytes()).hexdigest()[:16]} {arr.shape}"
    if isinstance(x, dict):
        # "epoch": the brush canvas's answer counter, fresh on every answer by design
        return {k: digest(v) for k, v in sorted(x.items()) if k not in ("id", "epoch")}
    if isinstance(x, (list, tuple)):
        return [digest(v) for v in x]
    return x


def run_script(c, steps) -> tuple[list, list]:
    """(digests, [(api_name, seconds)]) of one client running its steps in order."""
    outs, times = [], []
    for api, args in steps:
        t = time.perf_counter()
        out = c.predict(*args, api_name=api)
        times.append((api, time.perf_counter() - t))
        outs.append(digest(out))
    return outs, times


def isolation(clients, scripts, rounds: int = 1) -> dict:
    """Each client's steps alone (one after another), then all clients at once ``rounds`` times;
    every concurrent result must equal the client's alone result."""
    alone = [run_script(c, s) for c, s in zip(clients, scripts)]
    start = threading.Barrier(len(clients))

    def together(k):
        start.wait()
        return [run_script(clients[k], scripts[k]) for _ in range(rounds)]
    t = time.perf_counter()
    with ThreadPoolExecutor(len(clients)) as pool:
        runs = list(pool.map(together, range(len(clients))))
    wall = time.perf_counter() - t
    same = [all(outs == alone[k][0] for outs, _ in runs[k]) for k in range(len(clients))]
    times = [dt for k in range(len(clients)) for _, ts in runs[k] for _, dt in ts]
    paint = [dt for k in range(len(clients)) for _, ts in runs[k] for api, dt in ts
             if api.startswith("/paint")]
    paint_alone = [dt for _, ts in alone for api, dt in ts if api.startswith("/paint")]
    return {"same": same, "alone": [outs for outs, _ in alone], "requests": len(times),
            "wall": wall, "paint": paint, "paint_alone": paint_alone}


def fill_queue(c, model_id: str, max_size: int, extra: int = 8) -> dict:
    """Join max_size + 2 + ``extra`` paint_load events at once (raw HTTP, as a browser
    does); count the accepted and rejected ones and keep the rejection text; then cancel what was
    accepted so the queue drains at once."""
    import httpx
    fn = next(d["id"] for d in c.config["dependencies"] if d.get("api_name") == "paint_load")
    n = max_size + 2 + extra
    start = threading.Barrier(n)
    cancel_url = urllib.parse.urljoin(c.src_prefixed, "cancel")

    def join(_):
        session = f"queue-{uuid.uuid4()}"
        body = {"data": [model_id, 1], "fn_index": fn, "session_hash": session,
                "event_data": None, "trigger_id": None}
        start.wait()
        r = httpx.post(c.sse_data_url, json=body, timeout=120)
        return session, r.status_code, r.json()

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(join, range(n)))
    accepted = [(s, a["event_id"]) for s, code, a in answers if code == 200]
    for session, event_id in accepted:
        httpx.post(cancel_url, json={"session_hash": session, "fn_index": fn,
                                     "event_id": event_id}, timeout=120)
    rejected = [a.get("detail", a) for _, code, a in answers if code == 503]
    return {"sent": n, "accepted": len(accepted), "rejected": len(rejected),
            "message": rejected[0] if rejected else None,
            "other": sorted({code for _, code, _ in answers} - {200, 503})}


def open_sessions(c, model_id: str, concept: str, n: int, pay: Payloads, prefix: str) -> float:
    """``n`` new sessions through one client, each loading an image and painting a stroke (so it
    holds an edit stack). The sessions are left open (no heartbeat disconnect), as a browser tab
    would be, so the tabs' time_to_live decides when their state goes. Returns seconds taken."""
    mask = pay.mask((100, 260, 100, 260))
    t = time.perf_counter()
    for k in range(n):
        deadline = time.time() + 60
        while c.stream_open and time.time() < deadline:   # the last session's stream closes
            time.sleep(0.01)
        c.session_hash = f"{prefix}{k}-{uuid.uuid4()}"
        c.predict(model_id, 1000 + k, api_name="/paint_load")
        c.predict(mask, concept, "Draw", 10, api_name="/paint_apply")
    return time.perf_counter() - t


def _photo(pay: Payloads) -> str:
    """A 256 px synthetic photo (colour ramps) for the inversions of the class benchmark."""
    photo = Path(pay.dir) / "photo.png"
    if not photo.is_file():
        yy, xx = np.mgrid[0:256, 0:256]
        Image.fromarray(np.stack([xx, yy, (xx + yy) % 256], -1).astype(np.uint8)).save(photo)
    return str(photo)


def classroom(url: str, source: str, concepts: list[str], pay: Payloads, n: int,
              strokes: int = 5, pause: float = 0.0) -> dict:
    """``n`` clients painting at once (each its own image, then ``strokes`` strokes through
    ``/paint_stroke`` as the brush canvas sends them, ``pause`` seconds apart) while one more
    client runs a photo inversion, a long job in the shared "heavy" group: stroke latencies,
    errors, and how long the inversion took meanwhile."""
    photo = _photo(pay)
    clients = [client(url) for _ in range(n + 1)]
    start = threading.Barrier(n + 1)
    lat, errors, inversion = [], [], {}

    def painter(k):
        c = clients[k]
        start.wait()
        try:
            c.predict(source, 2000 + k, api_name="/paint_load")
            for j in range(strokes):
                y = (37 * k + 61 * j) % 400
                t = time.perf_counter()
                c.predict(pay.mask((y, y + 80, 100 + j * 50, 180 + j * 50)),
                          concepts[(k + j) % len(concepts)], "Draw", 10, True,
                          api_name="/paint_stroke")
                lat.append(time.perf_counter() - t)
                time.sleep(pause)
        except Exception as e:  # noqa: BLE001 - counted and reported
            errors.append(f"{type(e).__name__}: {e}")

    def inverter():
        from gradio_client import handle_file
        start.wait()
        t = time.perf_counter()
        try:
            clients[n].predict(source, handle_file(photo), api_name="/photo_invert")
        except Exception as e:  # noqa: BLE001
            errors.append(f"inversion {type(e).__name__}: {e}")
        inversion["s"] = time.perf_counter() - t

    with ThreadPoolExecutor(n + 1) as pool:
        jobs = [pool.submit(painter, k) for k in range(n)] + [pool.submit(inverter)]
        for j in jobs:
            j.result()
    for c in clients:
        c.close()
    return {"lat": lat, "errors": errors, "inversion_s": inversion.get("s", float("nan"))}


def class_run(source: str, concepts: list[str], pay: Payloads, n: int, threads: int) -> dict:
    """A fresh server with ``threads`` torch threads (0: torch's default): its CPU time per
    stroke (one client, 30 strokes in a row), then the class twice: every client sending its
    next stroke as soon as the last is answered, and at a human pace (1 s between strokes)."""
    with Server(source, threads=threads) as srv:
        c = client(srv.url)
        c.predict(source, 3000, api_name="/paint_load")
        masks = [pay.mask((y, y + 80, 100, 200)) for y in range(0, 420, 14)]
        c.predict(masks[0], concepts[0], "Draw", 10, True, api_name="/paint_stroke")
        cpu0 = cpu_s(srv.proc.pid)
        for m in masks:
            c.predict(m, concepts[0], "Draw", 10, True, api_name="/paint_stroke")
        cpu_ms = 1000 * (cpu_s(srv.proc.pid) - cpu0) / len(masks)
        from gradio_client import handle_file
        t = time.perf_counter()
        c.predict(source, handle_file(_photo(pay)), api_name="/photo_invert")
        alone = time.perf_counter() - t
        c.close()
        return {"cpu_ms": round(cpu_ms, 1), "inversion_alone_s": alone,
                "closed": classroom(srv.url, source, concepts, pay, n),
                "paced": classroom(srv.url, source, concepts, pay, n, pause=1.0)}


def _ms(xs, q):
    xs = sorted(xs)
    return 1000 * xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


# ------------------------------------------------------------------ the benchmark
def run(quick: bool = False, source: str = "default") -> list[dict]:
    n_clients, rounds, n_sessions = (2, 1, 20) if quick else (8, 3, 200)
    pay = Payloads()
    rows = []
    with Server(source) as srv:
        clients = [client(srv.url) for _ in range(n_clients)]
        concepts = paint_concepts(clients[0])
        scripts = [script(i, source, concepts, pay, watermark=True) for i in range(n_clients)]
        iso = isolation(clients, scripts, rounds)
        full = fill_queue(clients[0], source, srv.queue["max_size"])
        for c in clients:
            c.close()
    n_class = 6 if quick else 30
    classes = {threads: class_run(source, concepts, pay, n_class, threads)
               for threads in dict.fromkeys((TORCH_THREADS, 0))}
    ok = sum(iso["same"])
    lengths = sorted({len(s) for s in scripts})
    rows += [
        row("load", "server start", srv.start_s, "s", "child process: import, build_app, launch"),
        row("load", "isolation", f"{ok}/{n_clients}", "clients",
            f"bit-for-bit equal to the same requests alone ({'-'.join(map(str, lengths))} "
            f"requests x {rounds} round(s) each; Paint + Watermark tabs)"),
        row("load", "throughput", iso["requests"] / iso["wall"], "req/s",
            f"{n_clients} concurrent clients, queue concurrency "
            f"{srv.queue['default_concurrency_limit']}"),
        row("load", "paint latency p50 alone", _ms(iso["paint_alone"], 0.5), "ms", "one client"),
        row("load", "paint latency p50", _ms(iso["paint"], 0.5), "ms", f"{n_clients} clients"),
        row("load", "paint latency p95", _ms(iso["paint"], 0.95), "ms", f"{n_clients} clients"),
        row("load", "full queue rejected", full["rejected"], "req",
            f"of {full['sent']} at once (max_size {srv.queue['max_size']}): "
            f"{full['message']!r}; the browser shows 'This application is currently busy'"),
    ]
    for threads, cls in classes.items():
        setting = (f"PWN_TORCH_THREADS={threads}" + (" (the app's)" if threads == TORCH_THREADS else "")
                   if threads else "torch's default threads (one per core)")
        closed, paced = cls["closed"], cls["paced"]
        rows += [
            row("load", f"stroke server CPU, threads {threads or 'default'}", cls["cpu_ms"], "ms",
                f"{setting}: the server's CPU time per /paint_stroke, one client, 30 in a row"),
            row("load", f"photo inversion alone, threads {threads or 'default'}",
                round(cls["inversion_alone_s"], 1), "s", f"{setting}: /photo_invert, nothing else running"),
            row("load", f"class: stroke p50 / p95, threads {threads or 'default'}",
                f"{_ms(closed['lat'], 0.5):.0f} / {_ms(closed['lat'], 0.95):.0f}", "ms",
                f"{setting}: {n_class} clients painting (/paint_stroke, each sends its next "
                f"stroke as soon as the last is answered) while one more runs a photo inversion "
                f"({closed['inversion_s']:.0f} s meanwhile); {len(closed['lat'])} strokes"),
            row("load", f"class at a human pace: stroke p50 / p95, threads {threads or 'default'}",
                f"{_ms(paced['lat'], 0.5):.0f} / {_ms(paced['lat'], 0.95):.0f}", "ms",
                f"{setting}: the same, each client pausing 1 s after each answer (inversion: "
                f"{paced['inversion_s']:.0f} s)"),
            row("load", f"class: errors, threads {threads or 'default'}",
                len(closed["errors"]) + len(paced["errors"]), "",
                "; ".join(sorted(set(closed["errors"] + paced["errors"])))[:300] or "none"),
        ]
    # memory: a fresh server whose state TTL outlasts creating the sessions, then expires
    per_session = statistics.median(iso["paint_alone"]) * 2
    ttl = max(30.0, round(2 * per_session * n_sessions))
    with Server(source, ttl=ttl) as srv:
        c = client(srv.url)
        open_sessions(c, source, concepts[0], 1, pay, "warm-")     # first load + stroke: code paths, catalog
        before = srv.stats("mem-")
        took = open_sessions(c, source, concepts[0], n_sessions // 2, pay, "mem-a")
        half = srv.stats("mem-")
        took += open_sessions(c, source, concepts[0], n_sessions - n_sessions // 2, pay, "mem-b")
        after = srv.stats("mem-")
        t0, freed = time.time(), after
        while time.time() - t0 < ttl + 60:
            time.sleep(5)
            freed = srv.stats("mem-")
            if freed["states"] == 0:
                break
        c.close()
    grow = (after["rss_mb"] - half["rss_mb"]) / (n_sessions - n_sessions // 2)
    rows += [
        row("load", "RSS before sessions", before["rss_mb"], "MB", "server, after one session"),
        row("load", f"RSS after {n_sessions // 2} sessions", half["rss_mb"], "MB", ""),
        row("load", f"RSS after {n_sessions} sessions", after["rss_mb"], "MB",
            f"{after['states']} live gr.State values; created in {took:.0f} s; "
            f"{grow:.2f} MB/session over the second half (shared LRU caches fill first)"),
        row("load", "RSS after TTL", freed["rss_mb"], "MB",
            f"TTL {ttl:.0f} s: {freed['states']} gr.State values left after "
            f"{time.time() - t0:.0f} s; Gradio still holds {freed['sessions']} session records "
            "(dropped beyond state_session_capacity)"),
    ]
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--serve", action="store_true", help="(child) run the app server")
    p.add_argument("--port", type=int)
    p.add_argument("--source", default="default")
    p.add_argument("--max-size", type=int)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    if a.serve:
        serve(a.port, a.source, a.max_size)
    else:
        for r in run(a.quick, a.source):
            print(r)


if __name__ == "__main__":
    main()
