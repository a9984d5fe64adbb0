"""Edits: the one way anything changes what a generator draws (ARCHITECTURE.md, "The flow of an edit").

An edit is a small value object applied *on top of* a read-only base generator; nothing here ever
writes into the shared model, so sessions that share one model are isolated by construction.

- :class:`UnitEdit` — replace some units' features after a layer, inside an optional spatial mask::

      out[:, u] = x[:, u] * (1 - a) + r_u * a,    a = alpha * mask     (other units untouched)

  ``r_u`` is the unit's value (0 = remove, e.g. its 0.99 quantile = draw). Successive UnitEdits on
  one layer are applied in order, which is exactly alpha-over compositing of the strokes.
- :class:`WeightEdit` — ``W + ΔW`` for a layer's main conv weight. ΔW is stored low-rank along
  the *input-channel* axis (the key space of rewriting): ``dirs [rank, C_in]`` and ``lam`` shaped
  like the weight with C_in replaced by rank, ``ΔW[..., o, i, y, x] = Σ_r lam[..., o, r, y, x] *
  dirs[r, i]`` (ProGAN weight ``[C_out, C_in, k, k]``; StyleGAN2 ``[1, C_out, C_in, 3, 3]``), or
  dense with :meth:`WeightEdit.full` (image-specific adaptation).
- :class:`ResidualEdit` — add a fixed ``[C, h, w]`` residual to a layer's features: what an
  inverted photo needs beyond its latent, so a photo renders through the same stack and Renderer.
- More kinds plug in with :func:`register_edit_kind` (the protocol is in its docstring).
- :class:`EditStack` — an immutable ordered tuple of edits: ``push`` / ``undo`` / ``clear`` return
  new stacks; ``weight_deltas()`` and ``feature_edit()`` give what ``Generator.start`` /
  ``Generator.run`` take; ``to_files`` / ``from_files`` write ``edits.json`` + ``edits.safetensors``
  (never pickle) and validate everything against the model when reading.
- :class:`Renderer` — renders ``(z, stack)`` for one shared model, caching the generator state just
  before the first layer a stack's unit edits touch, so a paint stroke at layer L re-runs only the
  layers from L on. Thread-safe, bounded LRU; edits are arguments, never stored on the model.

Masks: a UnitEdit's mask is ``[h, w]`` in [0, 1] and is meant to be at the layer's feature grid.
A mask of any other size is **resized** when applied (adaptive max pooling, the GANPaint default:
a feature cell is on if any pixel of its region is on; up-sizing repeats cells), so a brush mask at
image resolution can be passed straight in. Tensors given to edits are copied (float32, CPU);
treat edits as immutable.
"""
from .kinds import (EDIT_KINDS, EDITS_JSON, EDITS_TENSORS, ResidualEdit, UnitEdit, WeightEdit, layer_shape,
                    register_edit_kind, resize_mask)
from .render import Renderer
from .stack import EditStack

__all__ = ["UnitEdit", "WeightEdit", "ResidualEdit", "EditStack", "Renderer", "layer_shape", "resize_mask",
           "EDITS_JSON", "EDITS_TENSORS", "EDIT_KINDS", "register_edit_kind"]
