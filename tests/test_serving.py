"""Serving knobs: the ZeroGPU decorator (a no-op off ZeroGPU) and the session-state TTL knob."""
from __future__ import annotations

import importlib
import sys
import types

from demos.gpu import gpu, zero_gpu


def handler(x, progress=None):
    return x + 1


def fake_spaces(calls):
    mod = types.ModuleType("spaces")

    def GPU(duration=60):
        def wrap(fn):
            calls.append((fn, duration))
            return lambda *a, **k: ("on gpu", fn(*a, **k))
        return wrap
    mod.GPU = GPU
    return mod


def test_gpu_is_identity_without_spaces(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)          # import spaces -> ImportError
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    assert not zero_gpu()
    assert gpu(duration=30)(handler) is handler


def test_gpu_is_identity_without_the_env_var(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "spaces", fake_spaces(calls))
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert gpu()(handler) is handler and calls == []


def test_gpu_wraps_with_spaces_on_zero_gpu(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "spaces", fake_spaces(calls))
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert zero_gpu()
    wrapped = gpu(duration=120)(handler)
    assert wrapped is not handler and calls == [(handler, 120)]
    assert wrapped(1) == ("on gpu", 2)


def test_state_ttl_comes_from_the_environment(monkeypatch):
    import demos.settings as settings
    assert settings.STATE_TTL > 0
    monkeypatch.setenv("PWN_STATE_TTL", "7")
    try:
        assert importlib.reload(settings).STATE_TTL == 7.0
    finally:
        monkeypatch.delenv("PWN_STATE_TTL")
        importlib.reload(settings)
