"""Key statistics ``C = E[k kᵀ]`` of a layer: collected over sample images, saved as safetensors,
loaded from the bundle or the scratch cache; and the whitening they give."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .keys import MissingStatsError, Progress, RewriteError, Stop, _key_state, _numbers, _parts

_STATS_CACHE: dict[tuple[str, int], "KeyStats"] = {}
STATS_FORMAT = "painting-with-neurons-key-stats"
DEFAULT_STATS_SAMPLES = 1000          # images, as the original (zds size 1000, seed 1)
DEFAULT_STATS_BATCH = 10              # the original's tally batch size
EIG_REL_FLOOR = 1e-10                 # eigenvalues of C below max*1e-10 are clamped (whitening)


# =============================================================================== statistics
@dataclasses.dataclass
class KeyStats:
    """Uncentered second moment of a layer's keys: ``mom2 = E[k kᵀ]`` over ``count`` key pixels."""
    mom2: torch.Tensor                      # [C_in, C_in] float64
    count: int
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def C(self) -> torch.Tensor:
        return self.mom2

    @property
    def unit_mean_square(self) -> torch.Tensor:
        """E[k_i²] per key channel (the diagonal)."""
        return torch.diagonal(self.mom2)


def _C(C) -> torch.Tensor:
    if isinstance(C, KeyStats):
        C = C.mom2
    if not isinstance(C, torch.Tensor) or C.dim() != 2 or C.shape[0] != C.shape[1]:
        raise RewriteError("C must be KeyStats or a square [C_in, C_in] tensor")
    return C.double()


def collect_key_stats(model, layer: str, image_numbers, batch_size: int = DEFAULT_STATS_BATCH,
                      progress: Progress | None = None, stop: Stop | None = None,
                      truncation=None, noise=None, seed: int = 1, weight_deltas=None) -> KeyStats:
    """``C = E[k kᵀ]`` (uncentered) over every key pixel of ``image_numbers``, streamed in batches
    and accumulated in float64. ``truncation``/``noise`` default to the model's (recorded in the
    metadata). On ``stop()`` the images done so far are returned (``meta['samples']`` says how
    many)."""
    g, t, n, bundle = _parts(model)
    g.main_weight(layer)
    t = t if truncation is None else float(truncation)
    n = n if noise is None else noise
    numbers = _numbers(image_numbers)
    if not numbers:
        raise RewriteError("collect_key_stats needs at least one image number")
    batch_size = max(1, int(batch_size))
    mom2, count, done = None, 0, 0
    for s in range(0, len(numbers), batch_size):
        if stop is not None and stop():
            break
        chunk = numbers[s:s + batch_size]
        key, _ = _key_state(g, layer, g.sample_z(chunk, seed), t, n, weight_deltas)
        k = key.permute(0, 2, 3, 1).reshape(-1, key.shape[1]).double()
        mom2 = k.T @ k if mom2 is None else mom2 + k.T @ k
        count += k.shape[0]
        done += len(chunk)
        if progress is not None:
            progress(done, len(numbers), None)
    if mom2 is None:
        raise RewriteError("stopped before any image was processed")
    meta = {"format": STATS_FORMAT, "layer": layer, "samples": str(done),
            "first_image": str(numbers[0]), "last_image": str(numbers[done - 1]),
            "seed": str(seed), "truncation": repr(float(t)), "noise": str(n),
            "architecture": g.family, "key_pixels": str(count),
            "model": getattr(bundle, "name", "") or ""}
    return KeyStats((mom2 / count).cpu(), count, meta)


def save_key_stats(stats: KeyStats, path) -> Path:
    """Write ``stats`` to a safetensors file (tensors ``mom2`` [C_in, C_in] float64 and ``count``
    [1] int64, metadata strings). Tensors other than those two already in the file (e.g. quantiles
    written by dissection) are kept; the write is atomic."""
    from safetensors.torch import load_file, save as st_save
    from safetensors import safe_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, meta = {}, {}
    if path.is_file():
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), "pt") as f:
                meta = dict(f.metadata() or {})
        except Exception:  # noqa: BLE001 - an unreadable old file is simply replaced
            tensors, meta = {}, {}
    tensors = {k: v.contiguous() for k, v in tensors.items() if k not in ("mom2", "count")}
    tensors["mom2"] = stats.mom2.double().cpu().contiguous()
    tensors["count"] = torch.tensor([int(stats.count)], dtype=torch.int64)
    meta.update({str(k): str(v) for k, v in stats.meta.items()})
    data = st_save(tensors, metadata=meta)
    from ..bundle import atomic_write
    atomic_write(path, data)
    return path


def load_key_stats(path, layer: str | None = None, channels: int | None = None) -> KeyStats:
    """Read a stats file written by :func:`save_key_stats`; checks shape, finiteness and, when
    given, the layer name and the key channel count."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            names = set(f.keys())
            if "mom2" not in names or "count" not in names:
                raise RewriteError(f"{path}: no key statistics in this file (tensors 'mom2' and "
                                   "'count' missing)")
            mom2, count = f.get_tensor("mom2"), f.get_tensor("count")
            meta = dict(f.metadata() or {})
    except RewriteError:
        raise
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises several types on damaged files
        raise RewriteError(f"{path}: not a readable safetensors stats file ({e})") from None
    if mom2.dim() != 2 or mom2.shape[0] != mom2.shape[1] or not bool(torch.isfinite(mom2).all()):
        raise RewriteError(f"{path}: 'mom2' must be a finite square matrix, got {tuple(mom2.shape)}")
    if layer is not None and meta.get("layer") not in (None, layer):
        raise RewriteError(f"{path}: statistics are for layer {meta.get('layer')!r}, not {layer!r}")
    if channels is not None and mom2.shape[0] != channels:
        raise RewriteError(f"{path}: statistics have {mom2.shape[0]} key channels but {layer} has "
                           f"{channels}; recompute them with `python -m core stats`")
    return KeyStats(mom2.double(), int(count.reshape(-1)[0]), meta)


def stats_path(model, layer: str) -> Path:
    g, _, _, bundle = _parts(model)
    if bundle is None or getattr(bundle, "path", None) is None:
        raise RewriteError("this model was not loaded from a bundle folder, so it has no cached "
                           "statistics; compute them with collect_key_stats(...) or save the bundle "
                           "and run `python -m core stats`")
    return bundle.stats_path(layer)


def get_stats(model, layer: str, path=None) -> KeyStats:
    """The cached key statistics of ``layer``: the file at ``path``, by default the bundle's
    (``<bundle>/stats/<layer>.safetensors``)."""
    g, _, _, bundle = _parts(model)
    w = g.main_weight(layer)
    path = stats_path(model, layer) if path is None else Path(path)
    if not path.is_file():
        raise MissingStatsError(f"no key statistics for {layer} of {bundle.name!r} ({path} is "
                                f"missing); compute them with: python -m core stats "
                                f"{bundle.path} --layer {layer}")
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _STATS_CACHE:
        if len(_STATS_CACHE) > 32:
            _STATS_CACHE.clear()
        _STATS_CACHE[key] = load_key_stats(path, layer, channels=w.shape[-3])
    return _STATS_CACHE[key]


def whitening(C) -> torch.Tensor:
    """``C^-1/2`` (ZCA) via eigh in float64; eigenvalues below ``max * EIG_REL_FLOOR`` clamped."""
    C = _C(C)
    evals, evecs = torch.linalg.eigh(C)
    floor = max(float(evals.max()), 1e-300) * EIG_REL_FLOOR
    return (evecs * evals.clamp(min=floor).rsqrt()) @ evecs.T
