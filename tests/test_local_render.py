"""Local re-rendering: a masked stroke recomputes only the window it can reach, same image."""
import pytest
import torch

from conftest import make_progan
from core.edits import EditStack, Renderer, UnitEdit, WeightEdit


@pytest.mark.parametrize("layer", ["layer2", "layer3", "layer4", "layer5"])
def test_rerun_region_matches_full_run(layer):
    g = make_progan((8, 8, 8, 4, 4))
    z = g.sample_z([3, 4])
    state = g.run(g.start(z), stop=layer)
    trace = g.trace_after(g.run(g.start(z), stop=g.layers[g.layer_index(layer) - 1]))
    h = state.x.shape[-1]
    for box in [(0, 1, 0, 1), (1, min(3, h), 0, 2), (h - 1, h, h - 2, h), (0, h, 0, h)]:
        x = state.x.clone()
        x[:, :, box[0]:box[1], box[2]:box[3]] += 1.5
        s2 = state.clone()
        s2.x = x
        full = g.finish(g.run(s2))
        assert torch.allclose(g.rerun_region(trace, layer, x, box), full, atol=1e-4)


def test_local_renderer_equals_full_renderer_with_weight_edits():
    g = make_progan((8, 8, 8, 4, 4))
    z = g.sample_z([1, 2])
    m1, m2 = torch.zeros(8, 8), torch.zeros(8, 8)
    m1[2:4, 3:5] = 1
    m2[7, 0] = 1
    stack = (EditStack().push(UnitEdit("layer4", [1, 2], [3.0, 2.0], mask=m1))
             .push(UnitEdit("layer4", [3], None, mask=m2))
             .push(WeightEdit.full("layer6", 0.1 * torch.randn_like(g.main_weight("layer6")))))
    local, plain = Renderer(g, local=True), Renderer(g)
    assert torch.allclose(local.render(z, stack), plain.render(z, stack), atol=1e-4)
    # Unmasked or multi-layer stacks take the ordinary path.
    whole = stack.push(UnitEdit("layer3", [0], [1.0]))
    assert torch.equal(local.render(z, whole), plain.render(z, whole))
    before = {k: v.clone() for k, v in g.state_dict().items()}
    local.render(z, stack)
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())
