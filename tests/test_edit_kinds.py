"""Edit types are open: a new kind registered with ``register_edit_kind`` goes through stacks, the
cached Renderer and edit files like UnitEdit and WeightEdit."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from conftest import make_progan
from core.edits import EDIT_KINDS, EditStack, Renderer, UnitEdit, register_edit_kind


@dataclasses.dataclass(frozen=True, eq=False)
class ShiftEdit:
    """Adds ``offset`` [C, h, w] to a layer's features (a residual, as a photo's is)."""
    layer: str
    offset: torch.Tensor
    label: str = ""
    kind: ClassVar[str] = "test_shift"
    acts_on: ClassVar[str] = "features"
    is_noop: ClassVar[bool] = False

    def validate(self, model):
        model.check_layer(self.layer)

    def apply(self, x):
        return x + self.offset.to(x)

    def meta(self):
        return {"type": self.kind, "layer": self.layer, "label": self.label}

    def fingerprint(self):
        return f"shift:{self.layer}:{float(self.offset.sum()):.6f}"

    def to_item(self, prefix):
        return {**self.meta(), "offset": f"{prefix}.offset"}, {f"{prefix}.offset": self.offset}

    @classmethod
    def from_item(cls, layer, item, tensor):
        return cls(layer, tensor("offset"), item.get("label", ""))


def test_a_registered_kind_renders_and_round_trips(tmp_path):
    register_edit_kind(ShiftEdit)
    try:
        g = make_progan()
        shift = ShiftEdit("layer4", torch.full((8, 8, 8), 0.5))
        stack = EditStack((UnitEdit("layer2", (0,), (1.0,)), shift))
        z = g.sample_z([0, 1])
        plain = Renderer(g).render(z)
        edited = Renderer(g).render(z, stack)
        assert float((edited - plain).abs().max()) > 1e-3
        # same pixels as running the generator with the stack's feature edit by hand
        assert torch.equal(edited, g.generate(z, edit=stack.feature_edit()))
        back = EditStack.from_files(stack.to_files(tmp_path / "e", g), g)
        assert [type(e) for e in back] == [UnitEdit, ShiftEdit]
        assert torch.equal(Renderer(g).render(z, back), edited)
    finally:
        del EDIT_KINDS["test_shift"]


def test_unregistered_objects_are_refused():
    import pytest
    with pytest.raises(TypeError, match="not a registered edit kind"):
        EditStack((object(),))


def test_photo_residual_is_an_edit(tmp_path):
    """An inverted photo's residual is a ResidualEdit: validated, rendered and saved like the others."""
    import pytest

    from core.edits import ResidualEdit
    g = make_progan()
    residual = ResidualEdit("layer4", torch.randn(1, 8, 8, 8) * 0.1, "photo residual")
    with pytest.raises(ValueError, match="outputs"):
        EditStack((ResidualEdit("layer2", torch.zeros(8, 8, 8)),)).validate(g)
    stack = EditStack((residual, UnitEdit("layer4", (1,), (2.0,))))
    z = g.sample_z([3])
    by_hand = g.generate(z, edit=lambda name, x: x + residual.residual if name == "layer4" else x)
    assert torch.equal(Renderer(g).render(z, EditStack((residual,))), by_hand)
    back = EditStack.from_files(stack.to_files(tmp_path / "e", g), g)
    assert torch.equal(Renderer(g).render(z, back), Renderer(g).render(z, stack))
