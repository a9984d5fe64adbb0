"""Start-up time: seconds from launching ``python app.py`` until the page answers 200 and its
config (the component tree the browser needs to draw the page) is served. Target <= 10 s.

Also measured with IPython hidden: gradio imports it when it is installed (for its notebook
magic; ~0.5-0.9 s here), and a fresh install from requirements.txt, as on a Space, does not have it."""
from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import row
from bench.bench_load import REPO, free_port


class LocalhostCheckFailed(RuntimeError):
    pass


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


OPTIONAL = ("IPython",)  # importable here, not installed by requirements.txt


def once(timeout: float = 600, hide: tuple[str, ...] = ()) -> tuple[float, float]:
    """(wall seconds, CPU seconds of app.py) until the page is usable; ``hide``: modules made
    unimportable, as on a machine without them."""
    import httpx
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    with tempfile.TemporaryFile("w+") as log:
        t = time.perf_counter()
        cmd = [sys.executable, "app.py"]
        if hide:
            cmd = [sys.executable, "-c", f"import sys, runpy; sys.modules.update(dict.fromkeys({hide!r})); "
                   "runpy.run_path('app.py', run_name='__main__')"]
        proc = subprocess.Popen(cmd, cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            while time.perf_counter() - t < timeout:
                if proc.poll() is not None:
                    log.seek(0)
                    text = log.read()[-2000:]
                    # launch() HEADs the page 5 times with a 3-s timeout and gives up: on a busy
                    # machine that kills a healthy server; counted and retried
                    error = (LocalhostCheckFailed if "localhost is not accessible" in text
                             else RuntimeError)
                    raise error(f"app.py exited with {proc.returncode}:\n{text}")
                try:
                    if (httpx.get(url, timeout=10).status_code == 200
                            and "components" in httpx.get(url + "config", timeout=10).json()):
                        return time.perf_counter() - t, cpu_seconds(proc.pid)
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.1)
            raise RuntimeError(f"app.py served no page within {timeout:.0f} s")
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def medians(n: int, hide: tuple[str, ...] = ()) -> tuple[float, float, int, int]:
    runs, failed = [], 0
    while len(runs) < n:
        try:
            runs.append(once(hide=hide))
        except LocalhostCheckFailed:
            failed += 1
            if failed > 3:
                raise
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs), n, failed


def run(quick: bool = False) -> list[dict]:
    wall, cpu, n, failed = medians(1 if quick else 3)
    note = f"; {failed} start(s) died in Gradio's 3-s localhost check" if failed else ""
    rows = [row("startup", "python app.py to usable page", wall,
                "s", f"median of {n}: page 200 + config served; target <= 10 s{note}"),
            # CPU time hardly depends on other jobs on the machine, wall time does
            row("startup", "CPU time of app.py until then", cpu, "s", f"median of {n}; user + system")]
    present = [m for m in OPTIONAL if importlib.util.find_spec(m) is not None]
    if present:
        wall, _, n, _ = medians(1 if quick else 3, hide=tuple(present))
        rows.append(row("startup", f"same without {', '.join(present)}", wall, "s",
                        f"median of {n}; as a fresh install from requirements.txt (gradio imports "
                        "them only when installed)"))
    return rows
