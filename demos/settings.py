"""Serving limits, chosen deliberately for a 2-vCPU Space (see README "Deploying")."""
import os

import gradio as gr

# Requests wait in one queue; more than this many waiting get a clear "queue is full" message.
QUEUE = {"max_size": 32, "default_concurrency_limit": 2}
# Long jobs (a dissection, a photo inversion, a watermark scan, a rewrite and its statistics) run
# one at a time, all users together, so that the second core stays free for everyone's strokes;
# each interactive event keeps its own group of 2.
HEAVY = {"concurrency_id": "heavy", "concurrency_limit": 1}
# Uploads beyond this size are rejected by the server before they reach our code.
MAX_FILE_SIZE = "10mb"
# Seconds a session's gr.State (edit stacks, an inverted photo) lives after its last update; the
# tabs read this. PWN_STATE_TTL shortens it for bench/bench_load.py. Gradio itself keeps the
# state of a *closed* page for 1 h after its last update, whatever this says.
STATE_TTL = float(os.environ.get("PWN_STATE_TTL", "1800"))
# Gradio keeps a record per session (with a copy of each component's config it changed: see
# demos/lean_sessions.py) even after its gr.State expired, dropping the least recently used
# beyond this many (bench_load measures it).
SESSION_CAPACITY = 1000
# torch's threads per operation in the server (PWN_TORCH_THREADS; 0 = torch's default, one per
# core). Requests already run side by side (the queue's concurrency), so more threads per
# operation only make them compete for the same cores; bench/bench_load.py compares the two.
TORCH_THREADS = int(os.environ.get("PWN_TORCH_THREADS", "1"))


def use_torch_threads() -> None:
    """Apply TORCH_THREADS to this process (the server's entry points call it; tests do not)."""
    if TORCH_THREADS:
        import torch
        torch.set_num_threads(TORCH_THREADS)


class CompressedPage:
    """Gzips the page itself (``/``): ~0.9 MB of component settings, ~90 kB compressed (7 ms).
    Gradio compresses what it serves by the path's file extension, and the page has none."""

    def __init__(self, app):
        from starlette.middleware.gzip import GZipMiddleware
        self.app, self.gzip = app, GZipMiddleware(app, minimum_size=1024, compresslevel=4)

    async def __call__(self, scope, receive, send):
        page = scope["type"] == "http" and scope["path"] in ("", "/")
        await (self.gzip if page else self.app)(scope, receive, send)


def launch_options() -> dict:
    """``demo.launch``'s settings for serving the app (fresh each call: Gradio adds to them). A
    link's page arrives built on its view (demos/link_pages.py), compressed; the images just
    rendered and Gradio's frontend files are served from memory (demos/cache.py)."""
    from starlette.middleware import Middleware

    from demos.cache import FrontendAssetsMiddleware, RecentImagesMiddleware
    from demos.link_pages import LinkPagesMiddleware
    return {"max_file_size": MAX_FILE_SIZE, "theme": gr.themes.Soft(), "footer_links": ["api", "gradio"],
            "state_session_capacity": SESSION_CAPACITY,
            "app_kwargs": {"middleware": [Middleware(FrontendAssetsMiddleware), Middleware(RecentImagesMiddleware),
                                          Middleware(CompressedPage), Middleware(LinkPagesMiddleware)]}}
