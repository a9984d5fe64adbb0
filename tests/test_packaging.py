"""pyproject.toml: the project installs with the pins of requirements.txt, and an installed copy
finds the embedded bundle (models/ travels as core/_models)."""
import tomllib
from pathlib import Path

import core

ROOT = Path(__file__).resolve().parent.parent


def _requirements(name):
    lines = (ROOT / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_pyproject_pins_are_requirements_txt():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] + project["optional-dependencies"]["test"] == _requirements("requirements.txt")
    assert not {r.split("==")[0] for r in _requirements("requirements-dev.txt")} & {
        r.split("==")[0] for r in project["dependencies"]}


def test_the_bundle_is_package_data_where_core_looks():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["core._models"] == "models"
    assert core.DEFAULT_BUNDLE == core.MODELS_DIR / "toytown"
    assert (core.DEFAULT_BUNDLE / "config.json").is_file()
