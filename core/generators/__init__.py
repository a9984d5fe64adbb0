"""Generator families. ``build(architecture, kwargs)`` makes an empty model of a family."""
from .base import Generator, LayerError, LayerState, sample_z

ARCHITECTURES = ("progan", "stylegan2")


def build(architecture: str, kwargs: dict) -> Generator:
    if architecture == "progan":
        from .progan import ProGANGenerator
        return ProGANGenerator(**kwargs)
    if architecture == "stylegan2":
        from .stylegan2 import StyleGAN2Generator
        return StyleGAN2Generator(**kwargs)
    raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")


__all__ = ["Generator", "LayerError", "LayerState", "sample_z", "build", "ARCHITECTURES"]
