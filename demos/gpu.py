"""ZeroGPU support: ``@gpu(duration=...)`` marks a heavy event handler.

On a Hugging Face ZeroGPU Space (the ``spaces`` package is installed and ``SPACES_ZERO_GPU`` is
set) a GPU is attached only while a function wrapped in ``spaces.GPU`` runs, so the handlers that
render or optimise must be wrapped. Everywhere else the decorator returns the function unchanged:
no import of ``spaces``, no extra frame, same signature for Gradio.
"""
from __future__ import annotations

import importlib
import os


def zero_gpu() -> bool:
    """Whether this process runs on a ZeroGPU Space (env var set and ``spaces`` importable)."""
    if not os.environ.get("SPACES_ZERO_GPU"):
        return False
    try:
        importlib.import_module("spaces")
    except ImportError:
        return False
    return True


def gpu(duration: int = 60):
    """Decorator: ``spaces.GPU(duration=duration)`` on ZeroGPU, the identity elsewhere.

    ``duration`` is the longest the call may hold the GPU (seconds); ZeroGPU queues shorter
    requests first, so keep it close to the real cost."""
    def wrap(fn):
        if not zero_gpu():
            return fn
        import spaces
        return spaces.GPU(duration=duration)(fn)
    return wrap
