"""Rendering images of one shared model under many sessions' edit stacks, caching the state before
the first edited layer."""
from __future__ import annotations

import collections
import hashlib
import threading

import torch

from ..generators import LayerState
from ..model import generator_of, sampling_options
from .kinds import layer_shape, resize_mask
from .stack import EditStack

def _digest(t: torch.Tensor) -> str:
    t = t.detach().to("cpu").contiguous()
    return hashlib.sha1(str((tuple(t.shape), str(t.dtype))).encode()
                        + t.numpy().tobytes()).hexdigest()


def _noise_key(noise):
    if isinstance(noise, (str, int)) or noise is None:
        return repr(noise)
    if isinstance(noise, torch.Tensor):
        return _digest(noise)
    if isinstance(noise, (list, tuple)):
        return tuple(_noise_key(n) for n in noise)
    return repr(noise)


class Renderer:
    """Renders images of one shared model under edit stacks, caching intermediate states.

    ``render(z, stack)`` runs ``start -> layers -> finish`` with the stack's weight deltas and unit
    edits, and gives bit-identical images to a full ``Generator.generate`` call. The state just
    before layer ``p`` is cached, where ``p`` is the first layer a (non-empty) feature edit touches, or
    ``cache_layer`` when that comes earlier (set it to the painting layer so that the first stroke
    on a freshly shown image already hits the cache), or the end when there is neither. The key is
    (z, truncation, noise, p, the WeightEdits on layers before p), so a paint stroke at layer L
    re-runs only L and later layers. The LRU holds ``max_entries`` states; a lock guards it, so one
    Renderer can serve many sessions (each passes its own stack; nothing is stored on the model).
    """

    def __init__(self, model, max_entries: int = 64, cache_layer: str | None = None,
                 local: bool = False):
        self.generator = generator_of(model)
        # an edited model (core.EditedModel) renders its own edits under every stack passed in
        self.base_edits = tuple(getattr(model, "stack", None) or ()) if hasattr(model, "base") else ()
        # local=True: strokes with masks on one layer re-render only the window they can affect
        # (generators with ``rerun_region``: ProGAN); equal to a full run up to float rounding.
        self.local = bool(local) and hasattr(self.generator, "rerun_region")
        self._traces: "collections.OrderedDict[tuple, dict]" = collections.OrderedDict()
        self.max_traces = 8
        self.defaults = dict(getattr(model, "defaults", None) or {"truncation": 1.0,
                                                                  "noise": "buffers"})
        self.max_entries = int(max_entries)
        self.cache_layer = None if cache_layer is None else self.generator.check_layer(cache_layer)
        self._cache: "collections.OrderedDict[tuple, LayerState]" = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def device(self) -> torch.device:
        return self.generator.device

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self._traces.clear()

    def cache_info(self) -> dict:
        """Entries, hits and misses of the state cache, the traces held, and the MB of tensors
        both hold (bounded: ``max_entries`` states, ``max_traces`` traces)."""
        def mb(obj) -> float:
            if isinstance(obj, torch.Tensor):
                return obj.nelement() * obj.element_size() / 2**20
            if isinstance(obj, LayerState):
                return mb(obj.x) + sum(mb(v) for v in obj.extras.values())
            return sum(mb(v) for v in obj.values()) if isinstance(obj, dict) else 0.0
        with self._lock:
            return {"entries": len(self._cache), "max_entries": self.max_entries,
                    "traces": len(self._traces), "hits": self.hits, "misses": self.misses,
                    "mb": round(sum(map(mb, self._cache.values())) + sum(map(mb, self._traces.values())), 1)}

    def _cache_point(self, stack: EditStack) -> int:
        g = self.generator
        p = len(g.layers)
        first = stack.first_feature_layer(g)
        if first is not None:
            p = min(p, first)
        if self.cache_layer is not None:
            p = min(p, g.layer_index(self.cache_layer))
        return p

    def _full(self, stack: EditStack | None) -> EditStack:
        return EditStack(self.base_edits + tuple(stack or ())) if self.base_edits else stack or EditStack()

    def prefix_state(self, z, stack: EditStack | None = None, truncation=None, noise=None,
                     point: int | None = None) -> tuple[LayerState, int]:
        """(a private copy of the state after ``layers[:point]``, point); cached."""
        return self._prefix(z, self._full(stack), truncation, noise, point)

    def _prefix(self, z, stack: EditStack, truncation, noise, point):
        g = self.generator
        t, n = sampling_options(self, truncation, noise)
        z = torch.as_tensor(z, dtype=torch.float32)
        if z.dim() == 1:
            z = z[None]
        z = z.reshape(z.shape[0], -1).to(self.device)
        deltas = stack.weight_deltas(g)           # validates the stack against the model
        p = self._cache_point(stack) if point is None else int(point)
        early = tuple(e.fingerprint() for e in stack.weight_edits
                      if g.layer_index(e.layer) < p)
        key = (_digest(z), t, _noise_key(n), p, early)
        with self._lock:
            state = self._cache.get(key)
            if state is not None:
                self._cache.move_to_end(key)
                self.hits += 1
            else:
                self.misses += 1
        if state is None:
            with torch.no_grad():
                state = g.start(z, truncation=t, noise=n, weight_deltas=deltas or None)
                if p > 0:
                    state = g.run(state, stop=g.layers[p - 1])
            stored = state.clone()
            stored.weight_deltas = None          # don't keep another session's deltas alive
            with self._lock:
                self._cache[key] = stored
                self._cache.move_to_end(key)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        state = state.clone()
        state.weight_deltas = deltas or None
        return state, p

    @torch.no_grad()
    def render(self, z, stack: EditStack | None = None, truncation: float | None = None,
               noise=None) -> torch.Tensor:
        """Images ``[N,3,H,W]`` (on the model's device) of latents ``z`` under ``stack``.
        ``truncation``/``noise`` default to the bundle's defaults."""
        stack = self._full(stack)
        if self.local:
            box = self._local_box(stack)
            if box is not None:
                return self._render_local(z, stack, truncation, noise, *box)
        state, _ = self._prefix(z, stack, truncation, noise, None)
        state = self.generator.run(state, edit=stack.feature_edit())
        return self.generator.finish(state)

    def _local_box(self, stack: EditStack):
        """(layer, box) when every unit edit is a masked edit on one layer, else None."""
        edits = [e for e in stack.feature_edits if not e.is_noop]
        if not edits or len({e.layer for e in edits}) != 1 or any(getattr(e, "mask", None) is None for e in edits):
            return None
        layer = edits[0].layer
        h, w = layer_shape(self.generator, layer)[1:]
        union = torch.zeros(h, w, dtype=torch.bool)
        for e in edits:
            union |= resize_mask(e.mask, (h, w)) > 0
        rows, cols = union.any(1).nonzero(), union.any(0).nonzero()
        if len(rows) == 0:
            return None
        return layer, (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)

    def _render_local(self, z, stack, truncation, noise, layer, box):
        g = self.generator
        point = g.layer_index(layer)
        state, _ = self._prefix(z, stack, truncation, noise, point)
        deltas = state.weight_deltas
        key = (_digest(torch.as_tensor(z, dtype=torch.float32)), truncation, _noise_key(noise), layer,
               tuple(e.fingerprint() for e in stack.weight_edits))
        with self._lock:
            trace = self._traces.get(key)
            if trace is not None:
                self._traces.move_to_end(key)
        if trace is None:
            trace = g.trace_after(state.clone())
            with self._lock:
                self._traces[key] = trace
                while len(self._traces) > self.max_traces:
                    self._traces.popitem(last=False)
        x = trace[layer]
        for e in stack.feature_edits:
            x = e.apply(x)
        return g.rerun_region(trace, layer, x, box, weight_deltas=deltas)

    def render_numbers(self, image_numbers, stack: EditStack | None = None,
                       truncation: float | None = None, noise=None, seed: int = 1,
                       batch_size: int = 16) -> torch.Tensor:
        """Images of image numbers (a list or ``"0-7"``), in batches (each cached on its own);
        returned on the CPU."""
        from ..images import parse_image_numbers
        z = self.generator.sample_z(parse_image_numbers(image_numbers), seed)
        bs = max(1, int(batch_size))
        return torch.cat([self.render(z[i:i + bs], stack, truncation, noise).cpu()
                          for i in range(0, len(z), bs)])
