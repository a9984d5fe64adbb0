"""Where the shipped models live: the checkout's ``models/`` folder, or ``core/_models`` in an
installed copy (pyproject.toml)."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The checkout's models/ folder; an installed copy (pyproject.toml) carries it as core/_models.
_INSTALLED_MODELS = Path(__file__).resolve().parent / "_models"
MODELS_DIR = _INSTALLED_MODELS if _INSTALLED_MODELS.is_dir() else REPO_ROOT / "models"
DEFAULT_BUNDLE = MODELS_DIR / "toytown"
