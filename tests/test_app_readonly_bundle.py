"""Shared files are read-only at run time (issue 17): the app's dissect and statistics endpoints
on the embedded model leave models/ exactly as shipped; what they compute goes to the scratch
cache (PWN_CACHE_DIR, a temporary folder in tests)."""
from __future__ import annotations

import hashlib
import subprocess

import pytest

from conftest import REPO, close, launch

pytestmark = pytest.mark.slow


def _digests(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _git_status() -> str:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "models/"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("git is not available")
    if out.returncode:
        pytest.skip("not a git checkout")
    return out.stdout


def test_dissect_and_stats_from_the_app_leave_the_shipped_bundle_alone():
    import core
    from gradio_client import Client

    from demos import build_app
    from demos.context import AppContext

    bundle = core.DEFAULT_BUNDLE
    if not (bundle / "config.json").is_file():
        pytest.skip("the embedded default bundle is not built")
    git_before, files_before = _git_status(), _digests(bundle)
    demo = build_app(AppContext())
    try:
        c = Client(launch(demo), verbose=False)
        # every layer of Toytown ships a catalog (with causal rankings): never replaced
        out = c.predict(layer="layer3", samples=100, api_name="/dissect_run")
        assert "never replaced" in out
        # layer2 ships no key statistics: computed here, into the scratch cache
        out = c.predict(layer="layer2", samples=10, api_name="/rewrite_stats")
        assert "layer2 over 10 images" in out and "cache" in out
        assert "(computed here)" in c.predict(layer="layer2", api_name="/rewrite_stats_info")
        # layer6 ships them: not recomputed
        assert "not recomputed" in c.predict(layer="layer6", samples=10, api_name="/rewrite_stats")
    finally:
        close(demo)
    assert _digests(bundle) == files_before
    assert _git_status() == git_before
    assert core.load_model("default").bundle.scratch("stats/layer2.safetensors").is_file()
