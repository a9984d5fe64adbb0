"""Shared test fixtures: tiny seeded models and bundles made on the fly (no downloads, no GPU).

Reuse:
    def test_x(progan_bundle):            # Path of a saved tiny ProGAN bundle (16 px, z_dim 8)
        model = core.load_model(progan_bundle)
    make_progan(sizes=(8, 8, 8, 4), seed=0)   # a random ProGANGenerator with non-zero biases
    make_stylegan2(seed=0)                    # a random tiny StyleGAN2Generator (16 px); skips the
                                              # test if the stylegan2 family is not in the tree
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)          # the test machine is small and shared with training jobs

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TINY_PROGAN_SIZES = (8, 8, 8, 4)  # z_dim 8; 8 channels at 4x4 and 8x8, 4 at 16x16 -> 16 px, 6 layers


def make_progan(sizes=TINY_PROGAN_SIZES, seed: int = 0):
    """A ProGANGenerator with seeded random weights *and* biases (so biases are tested too)."""
    from core.generators.progan import ProGANGenerator
    torch.manual_seed(seed)
    g = ProGANGenerator(list(sizes))
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith(".b"):
                p.normal_(0, 0.1)
    return g.eval()


def make_stylegan2(seed: int = 0, size: int = 16):
    """A tiny StyleGAN2Generator (16 px, style_dim 8, 2 mapping layers) with seeded random
    parameters, noise buffers and latent_avg."""
    sg2 = pytest.importorskip("core.generators.stylegan2",
                              reason="core/generators/stylegan2.py (StyleGAN2 family) is not in the tree yet")
    torch.manual_seed(seed)
    channels = {r: c for r, c in {4: 8, 8: 8, 16: 4, 32: 4}.items() if r <= size}
    g = sg2.StyleGAN2Generator(size=size, style_dim=8, n_mlp=2, channels=channels)
    with torch.no_grad():
        for name, p in g.named_parameters():
            p.add_(0.1 * torch.randn_like(p))
        for name, b in g.named_buffers():
            if name.startswith("noises.") or name == "latent_avg":
                b.copy_(torch.randn_like(b))
    return g.eval()


@pytest.fixture(autouse=True, scope="session")
def scratch_cache(tmp_path_factory):
    """What the app computes at run time (``Bundle.scratch``) goes to a temporary folder here,
    not to ~/.cache."""
    from core.bundle import CACHE_ENV
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("pwn-cache")))
        yield


@pytest.fixture
def tiny_progan():
    return make_progan()


@pytest.fixture
def progan_bundle(tmp_path, tiny_progan) -> Path:
    """Path of a tiny ProGAN bundle folder (config.json, generator.safetensors, README.md)."""
    from core.bundle import save_bundle
    return save_bundle(tiny_progan, tmp_path / "tiny-progan", name="tiny-progan")


def free_port() -> int:
    """A free local TCP port for an app server under test."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(demo, max_size: int = 16) -> str:
    """Queue and launch ``demo`` on a free local port; returns its URL. Gradio's own reachability
    check gives up after a 3 s HEAD request, which a busy test machine can miss; a patient check
    replaces it here."""
    import time

    import gradio.networking
    import httpx

    def patient_url_ok(url):
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.head(url, timeout=60).status_code < 400:
                    return True
            except httpx.HTTPError:
                time.sleep(0.5)
        return False

    demo.queue(max_size=max_size)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gradio.networking, "url_ok", patient_url_ok)
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(),
                                prevent_thread_lock=True, quiet=True)
    return url


def close(demo) -> None:
    """``demo.close()``, retried once: Gradio 6.31 sets an asyncio Event of its server loop from
    this thread, which can race with the loop ("deque mutated during iteration"); the flag is set
    by then, so the retry finishes the shutdown."""
    try:
        demo.close()
    except RuntimeError:
        demo.close()


def stroke(page, editor: str, y0: float = 0.35):
    """A mouse stroke for browser tests and benches: a short diagonal over the middle of
    ``editor``'s image (the canvas is wider than the image it shows, so strokes stay near its
    centre)."""
    canvas = page.locator(f"{editor} canvas").first
    canvas.scroll_into_view_if_needed()           # mouse coordinates are the viewport's
    box = canvas.bounding_box()
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x + 0.42 * w, y + y0 * h)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(x + (0.42 + 0.015 * i) * w, y + (y0 + 0.02 * i) * h)
    page.mouse.up()
