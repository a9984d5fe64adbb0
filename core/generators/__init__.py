"""Generator families and their registry.

``FAMILIES`` maps a bundle config's ``architecture`` to its :class:`Family`. Adding a family is a
Generator subclass in this package and one ``register_family`` line below.
"""
from . import progan, stylegan2
from .base import Family, Generator, LayerError, LayerState, sample_z

FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


register_family(progan.FAMILY)
register_family(stylegan2.FAMILY)


def get_family(architecture: str) -> Family:
    try:
        return FAMILIES[architecture]
    except (KeyError, TypeError):
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(FAMILIES)}") from None


def build(architecture: str, kwargs: dict) -> Generator:
    """An empty generator of a family from its constructor kwargs."""
    return get_family(architecture).generator(**kwargs)


def detect_family(obj, among=None) -> str | None:
    """The family a loaded legacy checkpoint object belongs to (of ``among``, default all), or
    None."""
    if not isinstance(obj, dict):
        return None
    families = FAMILIES.values() if among is None else [get_family(name) for name in among]
    return next((f.name for f in families if f.detect(obj)), None)


__all__ = ["Family", "FAMILIES", "Generator", "LayerError", "LayerState", "sample_z", "build",
           "detect_family", "get_family", "register_family"]
