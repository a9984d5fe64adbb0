"""Opening a model from any source, in one place: the embedded default, a bundle folder, a legacy
checkpoint, a Hugging Face Hub id ``org/name[@revision]`` (resolved by :mod:`core.hub`), or an
edited model (a folder, a zip or a Hub repo) applied on top of its base."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from .bundle import LEGACY_SUFFIXES, Bundle, BundleError, load_bundle, read_checkpoint
from .edited_files import CONFIG_FILE, ShareError, check_base, read_edited_config, safe_unzip
from .edits import EditStack
from .hub import HubError, Resolved, folder_kind, looks_like_repo_id, resolve
from .known import is_known_id, open_known
from .model import EditedModel, Model
from . import paths


def load_model(source, device: str | torch.device = "cpu") -> Model:
    """Open a model from:

    - a bundle folder (``config.json`` + ``generator.safetensors``), or a :class:`Bundle`;
    - a legacy checkpoint ``.pth``/``.pt`` (converted in memory, nothing written);
    - ``"default"``: the embedded bundle at ``<repo>/models/toytown`` (``DEFAULT_BUNDLE``);
    - a Hugging Face Hub id ``"org/name"`` or ``"org/name@revision"`` (cache first, then download;
      an edited-model repo is applied on top of its base), see :mod:`core.hub`;
    - an edited model: its folder or its ``.zip`` (the app's download), on top of its base;
    - a known model's id, such as ``"stylegan2-church"`` (``models/known_models.json``): fetched
      from the Hub or its original host and converted once, see :mod:`core.known`.

    Raises :class:`BundleError` (a ``ValueError``) naming the file and problem, or
    :class:`core.hub.HubError` naming the repo."""
    if isinstance(source, Bundle):
        return Model(source)
    if isinstance(source, str) and source == "default":
        if not (paths.DEFAULT_BUNDLE / "config.json").is_file():
            raise BundleError(f"{paths.DEFAULT_BUNDLE}: the embedded default bundle is not there yet "
                              "(it is built by the scripts in training/); pass a bundle folder or "
                              "a .pth/.pt checkpoint instead")
        return Model(load_bundle(paths.DEFAULT_BUNDLE, device=device))
    path = Path(source)
    if path.is_dir():
        if folder_kind(path) == "edited":
            return load_model_from_hub(path, device=device)
        return Model(load_bundle(path, device=device))
    if isinstance(source, str) and not path.exists() and is_known_id(source):
        return open_known(source, device)
    if isinstance(source, str) and not path.exists() and looks_like_repo_id(source):
        return load_model_from_hub(source, device=device)
    if path.is_file():
        if path.suffix.lower() == ".zip":
            return load_edited(path, device=device)
        if path.suffix.lower() not in LEGACY_SUFFIXES:
            raise BundleError(f"{path}: not a bundle folder, an edited model's .zip or a .pth/.pt "
                              "checkpoint")
        b = read_checkpoint(path)
        b.generator.to(device)
        return Model(b)
    raise BundleError(f"{path}: no such bundle folder, checkpoint file or known model id (or use "
                      "'default')")


def load_model_from_hub(source, device="cpu", *, cache_dir=None, allow_download: bool = True,
                        token=None, refresh: bool = False):
    """``core.load_model`` for Hub ids (and folders/"default"): resolve, then load the bundle,
    or the edited model on top of its base for an edited-model repo. Raises HubError."""
    r = resolve(source, cache_dir=cache_dir, allow_download=allow_download, token=token,
                refresh=refresh)
    return _load_resolved(r, device, cache_dir=cache_dir, allow_download=allow_download,
                          token=token)


def _load_resolved(r: Resolved, device, *, cache_dir, allow_download, token):
    if r.kind == "edited":
        return load_edited(r.path, device=device, cache_dir=cache_dir,
                           allow_download=allow_download, token=token)
    try:
        return Model(load_bundle(r.path, device=device))
    except BundleError as e:
        if r.repo_id is None:
            raise
        raise HubError(f"{r.source_id}: {e}") from None


def load_with_fallback(source, device="cpu", *, cache_dir=None, allow_download: bool = True,
                       token=None, default="default"):
    """``(model, notice)``: the model for ``source``, or the embedded default with a notice
    saying why. When ``source`` itself loaded, ``notice`` is ``None`` or says that an offline,
    possibly stale cached copy of a branch was used. Raises only when the default cannot be
    loaded either."""
    try:
        if isinstance(source, str) and looks_like_repo_id(source):
            r = resolve(source, cache_dir=cache_dir, allow_download=allow_download, token=token)
            return _load_resolved(r, device, cache_dir=cache_dir, allow_download=allow_download,
                                  token=token), r.notice
        return load_model(source, device=device), None
    except (ValueError, KeyError, OSError) as e:   # HubError, BundleError, LayerError, ...
        if source == default:
            raise
        reason = " ".join(str(e).split()) or type(e).__name__
        try:
            model = load_model(default, device=device)
        except (ValueError, OSError) as e2:
            raise HubError(f"{source}: {reason}; and the fallback {default!r} failed too: "
                           f"{e2}") from None
        return model, (f"Could not open {source}: {reason}. Showing the embedded default model "
                       f"({model.name}) instead.")


def _open_base(base: dict, device, **kw) -> Model:
    if "repo_id" in base:
        src = base["repo_id"] + (f"@{base['revision']}" if base.get("revision") else "")
        return load_model_from_hub(src, device, **kw)
    return load_model(base["local"], device=device)


def load_edited(source, device="cpu", *, base=None, check: bool = True, cache_dir=None,
                allow_download: bool = True, token=None) -> EditedModel:
    """Open an edited model (folder, Hub id ``org/name[@rev]`` or an uploaded ``.zip``) on top of
    its base. ``base`` (a Model or a source) overrides config.json's base. Raises ShareError /
    HubError / ValueError (bad edits: NaN, wrong shapes, unknown layers)."""
    if isinstance(source, (str, Path)) and str(source).lower().endswith(".zip") \
            and Path(source).is_file():
        folder = safe_unzip(source, tempfile.mkdtemp(prefix="pwn-edited-"))
    else:
        r = resolve(source, cache_dir=cache_dir, allow_download=allow_download, token=token)
        if r.kind != "edited":
            raise ShareError(f"{r.source_id}: not an edited model (no edits.json); open it with "
                             "core.load_model")
        folder = r.path
    where = str(source)
    cfg = None
    if base is None or (Path(folder) / CONFIG_FILE).is_file():
        cfg = read_edited_config(folder)
    if base is None:
        base_model = _open_base(cfg["base"], device, cache_dir=cache_dir,
                                allow_download=allow_download, token=token)
    else:
        base_model = base if isinstance(base, Model) else load_model(base, device=device)
    if isinstance(base_model, EditedModel):
        raise ShareError(f"{where}: the base of an edited model must be a plain model")
    if cfg is not None and check:
        check_base(cfg, base_model, where)
    try:
        stack = EditStack.from_files(folder, base_model)
    except FileNotFoundError as e:
        raise ShareError(str(e)) from None
    except (ValueError, KeyError) as e:
        raise ShareError(f"{where}: the edits do not fit the base model {base_model.name!r}: "
                         f"{e}") from None
    return EditedModel(base_model, stack, cfg, folder)


__all__ = ["load_model", "load_model_from_hub", "load_with_fallback", "load_edited"]
