"""Model sources -> local bundle folders: local folder, HF cache, Hub download, embedded default.

::

    from core import hub
    r = hub.resolve("org/church@3f2a...")      # Resolved(path, repo_id, revision, notice, ...)
    model = hub.load_model_from_hub("org/church")
    model, notice = hub.load_with_fallback("org/church")   # never fails while "default" loads

A *source* is one of

- a local bundle folder (``config.json`` + ``generator.safetensors``) or an edited-model folder
  (``edits.json`` ..., see :mod:`core.share`);
- ``"default"``: the embedded bundle at ``<repo>/models/toytown``;
- a Hub model id ``"org/name"`` or ``"org/name@revision"`` (branch, tag or 40-hex commit).

Resolution order (ARCHITECTURE.md): local folder -> the HF cache (``local_files_only=True``, no network)
-> download (only when ``allow_download`` and the Hub is not switched off with ``HF_HUB_OFFLINE``)
-> :class:`HubError`. Only bundle files are fetched (:data:`BUNDLE_PATTERNS`: safetensors and
JSON, never pickles). The library does not verify offline snapshots, so after every snapshot this
module checks that the needed files are there itself.

Catalogs and statistics are files in the bundle folder (``catalog/<layer>.json``,
``stats/<layer>.safetensors``), or live in a separate repo named by ``"catalog_repo"`` in
config.json (``"org/name[@rev]"``, ``"datasets/org/name[@rev]"`` for a dataset repo):
:func:`find_catalog` / :func:`find_stats` look in both.

Known models (the picker's list, ``models/known_models.json``) are :mod:`core.known`'s.
"""
from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

from . import paths

# Files a bundle or an edited-model share may hold; nothing else is downloaded (no pickles).
BUNDLE_PATTERNS = ["config.json", "generator.safetensors", "README.md",
                   "segmenter.safetensors", "segmenter.json", "encoder.safetensors", "encoder.json",
                   "catalog/*.json", "catalog/*.png", "stats/*.safetensors", "edits.json",
                   "edits.safetensors"]
CATALOG_PATTERNS = ["catalog/*.json", "catalog/*.png", "stats/*.safetensors", "README.md"]
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".ckpt", ".pickle")
EDITED_FORMAT = "painting-with-neurons-edited"

_REPO_ID = re.compile(r"(?:(datasets|models)/)?([A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*)"
                      r"(?:@([A-Za-z0-9_./-]+))?")
_COMMIT = re.compile(r"[0-9a-f]{40}")


class HubError(ValueError):
    """A model source that cannot be resolved. The message names the repo (or folder) and the
    file or reason: unknown repo, Hub unreachable or offline, missing file, unknown revision, a
    pickled checkpoint instead of safetensors."""


@dataclasses.dataclass(frozen=True)
class Resolved:
    """Where a source was found. ``revision`` is the commit hash of the snapshot for Hub sources
    (``None`` for local folders); ``notice`` is a line to show the user, or ``None``;
    ``origin`` is ``"local"``, ``"default"``, ``"cache"`` or ``"download"``; ``kind`` is
    ``"bundle"`` (config.json + generator.safetensors) or ``"edited"`` (edits.json: an edited
    model to apply on top of its base, see :mod:`core.share`)."""
    path: Path
    repo_id: str | None = None
    revision: str | None = None
    notice: str | None = None
    origin: str = "local"
    kind: str = "bundle"

    @property
    def source_id(self) -> str:
        """``org/name@commit`` for Hub sources, the folder otherwise."""
        return f"{self.repo_id}@{self.revision}" if self.repo_id else str(self.path)


# --------------------------------------------------------------------------- ids
def parse_repo_id(source) -> tuple[str, str | None, str] | None:
    """``(repo_id, revision or None, repo_type)`` when ``source`` looks like a Hub id
    (``org/name``, ``org/name@rev``, ``datasets/org/name@rev``), else ``None``."""
    if not isinstance(source, str):
        return None
    m = _REPO_ID.fullmatch(source.strip())
    if not m:
        return None
    kind, repo_id, rev = m.groups()
    if ".." in repo_id or repo_id.endswith((".", "-")) or (rev is not None and ".." in rev):
        return None
    return repo_id, rev, ("dataset" if kind == "datasets" else "model")


def looks_like_repo_id(source) -> bool:
    """True for ``"org/name"`` / ``"org/name@rev"`` strings that are not existing local paths."""
    return parse_repo_id(source) is not None and not Path(str(source)).exists()


def _default_bundle() -> Path:
    return paths.DEFAULT_BUNDLE


def huggingface():
    import huggingface_hub
    return huggingface_hub


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub sees it now (read at call time, so tests can
    monkeypatch ``huggingface_hub.constants.HF_HUB_OFFLINE``)."""
    import huggingface_hub.constants as c
    return bool(c.HF_HUB_OFFLINE)


def cache_root(cache_dir=None) -> Path:
    import huggingface_hub.constants as c
    return Path(cache_dir if cache_dir is not None else c.HF_HUB_CACHE)


def _repo_cache_folder(repo_id: str, repo_type: str, cache_dir) -> Path:
    return cache_root(cache_dir) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def _short(rev: str | None) -> str:
    return rev[:10] if rev and _COMMIT.fullmatch(rev) else str(rev)


def _label(repo_id: str, rev: str | None) -> str:
    return f"{repo_id}@{rev}" if rev else repo_id


# --------------------------------------------------------------------------- folder checks
def folder_kind(path) -> str | None:
    """``"edited"`` (edits.json), ``"bundle"`` (config.json + generator.safetensors) or None."""
    path = Path(path)
    if (path / "edits.json").is_file():
        return "edited"
    if (path / "config.json").is_file() and (path / "generator.safetensors").is_file():
        return "bundle"
    return None


def _what_is_missing(path: Path, where: str, listing: list[str] | None = None) -> str:
    """One sentence saying which needed file is missing (and whether a pickle is there instead)."""
    files = set(listing or [])
    if path.is_dir():
        files |= {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}
    pickles = sorted(f for f in files if Path(f).suffix.lower() in PICKLE_SUFFIXES)
    if not (path / "generator.safetensors").is_file() and pickles:
        return (f"{where} holds a pickled checkpoint ({', '.join(pickles[:3])}) instead of "
                "generator.safetensors; pickles are never loaded from the Hub (unpickling can run "
                "code). Convert it locally with `python -m core convert CHECKPOINT FOLDER` and "
                "publish the folder with `python -m core push FOLDER ORG/NAME`")
    missing = [f for f in ("config.json", "generator.safetensors") if not (path / f).is_file()]
    broken = [f for f in missing if (path / f).is_symlink()]
    if broken:
        return (f"{where}: file {broken[0]} is in the snapshot but its blob is missing "
                "(an interrupted download?); delete the cached repo and download it again")
    return (f"{where}: missing file {' and '.join(missing)} (a model repo needs config.json and "
            "generator.safetensors, or edits.json for an edited model)")


def check_folder(path, where: str | None = None, listing: list[str] | None = None) -> str:
    """Return the folder's kind (``"bundle"``/``"edited"``) or raise :class:`HubError` naming
    the missing file. ``listing`` (remote file names) only improves the message."""
    path = Path(path)
    kind = folder_kind(path)
    if kind is None:
        raise HubError(_what_is_missing(path, where or str(path), listing))
    return kind


# --------------------------------------------------------------------------- resolve
def cached_snapshot(repo_id, rev, repo_type, cache_dir, patterns, *,
                     incomplete_ok: bool = False) -> Path | None:
    hf = huggingface()
    try:
        return Path(hf.snapshot_download(repo_id, repo_type=repo_type, revision=rev,
                                          cache_dir=cache_dir, local_files_only=True,
                                          allow_patterns=patterns))
    except hf.errors.HFValidationError as e:
        raise HubError(f"{_label(repo_id, rev)}: not a valid Hub id ({e})") from None
    except hf.errors.IncompleteSnapshotError as e:
        if incomplete_ok:
            return None
        raise _Incomplete(f"{_label(repo_id, rev)}: the cached snapshot is incomplete "
                          f"({_first_line(e)})") from None
    except (hf.errors.LocalEntryNotFoundError, FileNotFoundError):
        return None


class _Incomplete(HubError):
    """A cached snapshot whose tree listing names files that are not there."""


def _cached_refs(repo_id, repo_type, cache_dir) -> dict[str, str]:
    refs = _repo_cache_folder(repo_id, repo_type, cache_dir) / "refs"
    out = {}
    if refs.is_dir():
        for p in refs.rglob("*"):
            if p.is_file():
                out[str(p.relative_to(refs))] = p.read_text().strip()
    return out


def _not_cached_reason(repo_id, rev, repo_type, cache_dir) -> str:
    folder = _repo_cache_folder(repo_id, repo_type, cache_dir)
    if folder.is_dir():
        refs = _cached_refs(repo_id, repo_type, cache_dir)
        known = ", ".join(f"{k}={_short(v)}" for k, v in sorted(refs.items())) or "none named"
        return (f"revision {rev or 'main'!r} of {repo_id} is not in the local cache "
                f"({cache_root(cache_dir)}; cached refs: {known})")
    return f"{repo_id} is not in the local Hugging Face cache ({cache_root(cache_dir)})"


def explain_error(e: BaseException, repo_id: str, rev: str | None) -> str:
    """A sentence for an exception raised by a huggingface_hub download."""
    hf = huggingface()
    err = hf.errors
    label = _label(repo_id, rev)
    if isinstance(e, err.GatedRepoError):
        return (f"{label}: the repo is gated; accept its terms on the Hub and pass a token "
                "(HF_TOKEN)")
    if isinstance(e, err.RepositoryNotFoundError):
        return (f"{label}: no such model repo on the Hub (unknown repo, or private and no token "
                "with access was given)")
    if isinstance(e, err.RevisionNotFoundError):
        return f"{label}: revision {rev!r} not found in {repo_id}"
    if isinstance(e, (err.RemoteEntryNotFoundError, err.EntryNotFoundError)) and not isinstance(
            e, err.LocalEntryNotFoundError):
        return f"{label}: file not found in the repo ({_first_line(e)})"
    if isinstance(e, err.OfflineModeIsEnabled) or hub_offline():
        return f"{label}: not cached and the Hub is switched off (HF_HUB_OFFLINE=1)"
    if isinstance(e, err.LocalEntryNotFoundError):   # raised when the Hub cannot be reached
        return f"{label}: not cached and the Hub is unreachable ({_first_line(e)})"
    if isinstance(e, err.HfHubHTTPError):
        return f"{label}: the Hub answered with an error ({_first_line(e)})"
    return f"{label}: the Hub is unreachable ({type(e).__name__}: {_first_line(e)})"


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:200]


# After a failed connection the Hub is treated as unreachable for a while: each uncached lookup
# against an unreachable Hub retries for ~20 s, which must not repeat for every model and catalog.
UNREACHABLE_FOR_S = 300.0
_DOWN_SINCE: list[float] = []


def hub_down() -> str | None:
    if _DOWN_SINCE and time.monotonic() - _DOWN_SINCE[0] < UNREACHABLE_FOR_S:
        return (f"the Hub was unreachable {time.monotonic() - _DOWN_SINCE[0]:.0f} s ago (not "
                f"retried for {UNREACHABLE_FOR_S:.0f} s)")
    _DOWN_SINCE.clear()
    return None


def _download(repo_id, rev, repo_type, cache_dir, patterns, token) -> Path:
    hf = huggingface()
    try:
        return Path(hf.snapshot_download(repo_id, repo_type=repo_type, revision=rev,
                                          cache_dir=cache_dir, allow_patterns=patterns,
                                          token=token))
    except hf.errors.HFValidationError as e:
        raise HubError(f"{_label(repo_id, rev)}: not a valid Hub id ({e})") from None
    except Exception as e:  # noqa: BLE001 - HfHubHTTPError (an OSError), httpx2 transport errors
        if not isinstance(e, (hf.errors.HfHubHTTPError, hf.errors.OfflineModeIsEnabled)):
            _DOWN_SINCE[:] = [time.monotonic()]      # no answer at all: remember for a while
        raise HubError(explain_error(e, repo_id, rev)) from None


def download_file(repo_id: str, filename: str, rev: str | None = None, *, cache_dir=None,
                  token=None, allow_download: bool = True) -> Path:
    """One file of a Hub model repo through the HF cache (cache first; a download only when
    ``allow_download`` and the Hub is not switched off). Raises HubError with one sentence."""
    hf = huggingface()
    local_only = not allow_download or hub_offline()
    down = None if local_only else hub_down()
    try:
        return Path(hf.hf_hub_download(repo_id, filename, revision=rev, cache_dir=cache_dir,
                                       token=token, local_files_only=local_only or bool(down)))
    except hf.errors.HFValidationError as e:
        raise HubError(f"{_label(repo_id, rev)}: not a valid Hub id ({e})") from None
    except Exception as e:  # noqa: BLE001 - HfHubHTTPError (an OSError), transport errors
        if local_only or down:
            why = down or ("the Hub is switched off (HF_HUB_OFFLINE=1)" if allow_download
                           else "downloads are turned off")
            raise HubError(f"{_label(repo_id, rev)}: {filename} is not in the local cache and "
                           f"{why}") from None
        if not isinstance(e, (hf.errors.HfHubHTTPError, hf.errors.OfflineModeIsEnabled)):
            _DOWN_SINCE[:] = [time.monotonic()]
        raise HubError(explain_error(e, repo_id, rev)) from None


def _remote_listing(repo_id, rev, repo_type, token) -> list[str] | None:
    try:
        return list(huggingface().HfApi(token=token).list_repo_files(repo_id, repo_type=repo_type,
                                                             revision=rev))
    except Exception:  # noqa: BLE001 - only used to improve an error message
        return None


def resolve(source, *, cache_dir=None, allow_download: bool = True, token=None,
            refresh: bool = False) -> Resolved:
    """Find ``source`` as a local folder (see the module docstring). ``refresh`` skips the cache
    for branch names (always downloads when allowed). Raises :class:`HubError`."""
    if not isinstance(source, (str, Path)):
        raise HubError(f"expected a folder, 'default' or a Hub id 'org/name[@revision]', got a "
                       f"{type(source).__name__}")
    parsed = parse_repo_id(source) if isinstance(source, str) else None
    if parsed is None or Path(source).exists():     # a local folder named like an id wins
        return resolve_local(source)
    repo_id, rev, repo_type = parsed
    return _resolve_repo(repo_id, rev, repo_type, cache_dir=cache_dir,
                         allow_download=allow_download, token=token, refresh=refresh,
                         patterns=BUNDLE_PATTERNS, check=True)


def resolve_local(source) -> Resolved:
    if isinstance(source, str) and source == "default":
        path = _default_bundle()
        if folder_kind(path) is None:
            raise HubError(f"{path}: the embedded default bundle is not there yet (it is built by "
                           "the scripts in training/)")
        return Resolved(path, origin="default")
    path = Path(source).expanduser()
    if path.is_dir():
        return Resolved(path, kind=check_folder(path))
    if path.is_file():
        raise HubError(f"{path}: is a file, not a model folder (open legacy .pth/.pt checkpoints "
                       "with core.load_model or convert them with `python -m core convert`)")
    raise HubError(f"{source}: no such folder, and not a Hub id (expected 'org/name' or "
                   "'org/name@revision', or 'default')")


def _resolve_repo(repo_id, rev, repo_type, *, cache_dir, allow_download, token, refresh,
                  patterns, check) -> Resolved:
    label = _label(repo_id, rev)
    cached, problem = None, None
    pinned = bool(rev and _COMMIT.fullmatch(rev))
    if pinned or not refresh:                       # refresh re-downloads branches and tags
        try:
            cached = cached_snapshot(repo_id, rev, repo_type, cache_dir, patterns)
        except _Incomplete as e:
            problem = str(e)
    if cached is not None:
        if not check:
            return Resolved(cached, repo_id, cached.name, None, "cache", "catalog")
        kind = folder_kind(cached)
        if kind is not None:
            notice = None
            if not pinned:
                down = "offline (HF_HUB_OFFLINE=1)" if hub_offline() else hub_down()
                if down:
                    notice = (f"{down}: using the cached copy of {repo_id}@{rev or 'main'} "
                              f"(commit {_short(cached.name)}), which may be older than the Hub's")
            return Resolved(cached, repo_id, cached.name, notice, "cache", kind)
        problem = _what_is_missing(cached, f"{label} (cached snapshot {_short(cached.name)})")
    can_download = allow_download and not hub_offline()
    if not can_download:
        if problem:
            raise HubError(problem)
        why = ("the Hub is switched off (HF_HUB_OFFLINE=1)" if allow_download
               else "downloads are turned off")
        raise HubError(f"{_not_cached_reason(repo_id, rev, repo_type, cache_dir)} and {why}")
    down = hub_down()
    if down:
        raise HubError(f"{_not_cached_reason(repo_id, rev, repo_type, cache_dir)} and {down}"
                       if not problem else f"{problem}; {down}")
    path = _download(repo_id, rev, repo_type, cache_dir, patterns, token)
    if not check:
        return Resolved(path, repo_id, path.name, None, "download", "catalog")
    kind = folder_kind(path)
    if kind is None:
        listing = _remote_listing(repo_id, rev, repo_type, token)
        raise HubError(_what_is_missing(path, label, listing))
    return Resolved(path, repo_id, path.name, None, "download", kind)


def fetch_files(source: str, patterns: list[str], *, cache_dir=None, allow_download: bool = True,
                token=None) -> Path:
    """The local folder of the files matching ``patterns`` in the Hub repo ``org/name[@rev]``
    (cache first, then a download), for repos that are not bundles (a segmenter's). Raises
    HubError."""
    parsed = parse_repo_id(source)
    if parsed is None:
        raise HubError(f"{source!r} is not a Hub id ('org/name' or 'org/name@revision')")
    repo_id, rev, repo_type = parsed
    return _resolve_repo(repo_id, rev, repo_type, cache_dir=cache_dir, allow_download=allow_download,
                         token=token, refresh=False, patterns=patterns, check=False).path


def cached_models(cache_dir=None) -> list[str]:
    """The Hub ids ``org/name`` of the model repos in the local HF cache that hold a bundle or an
    edited model (in any cached revision): what opens offline."""
    out = []
    for repo in sorted(cache_root(cache_dir).glob("models--*--*")):
        if any(folder_kind(s) for s in (repo / "snapshots").glob("*") if s.is_dir()):
            out.append(repo.name[len("models--"):].replace("--", "/"))
    return out


# --------------------------------------------------------------------------- provenance
def origin(model_or_bundle) -> dict | None:
    """Where a loaded model came from, for sharing: ``{"repo_id", "revision"}`` when its folder
    is an HF cache snapshot (revision = the commit), ``{"local": "default"}`` for the embedded
    default, ``{"local": "<folder>"}`` for another folder, ``None`` for an in-memory bundle."""
    bundle = getattr(model_or_bundle, "bundle", model_or_bundle)
    path = getattr(bundle, "path", None)
    if path is None:
        return None
    path = Path(path).resolve()
    parts = path.parts
    for i in range(len(parts) - 2):
        if (parts[i].startswith("models--") and parts[i + 1] == "snapshots"
                and _COMMIT.fullmatch(parts[i + 2])):
            return {"repo_id": parts[i][len("models--"):].replace("--", "/"),
                    "revision": parts[i + 2]}
    if path == _default_bundle().resolve():
        return {"local": "default"}
    return {"local": str(path)}


# --------------------------------------------------------------------------- catalogs
def _catalog_source(bundle):
    cfg = getattr(bundle, "config", {}) or {}
    spec = cfg.get("catalog_repo")
    if isinstance(spec, dict):
        spec = (("datasets/" if spec.get("repo_type") == "dataset" else "")
                + spec.get("repo_id", "") + (f"@{spec['revision']}" if spec.get("revision") else ""))
    return spec or None


def catalog_folder(model_or_bundle, *, cache_dir=None, allow_download: bool = True,
                   token=None) -> Path | None:
    """The folder of the catalog repo named by config.json ``"catalog_repo"`` (resolved like a
    model: cache, then download), or None when the config names none. Raises HubError."""
    bundle = getattr(model_or_bundle, "bundle", model_or_bundle)
    spec = _catalog_source(bundle)
    if spec is None:
        return None
    parsed = parse_repo_id(spec)
    if parsed is None:
        raise HubError(f"config.json of {getattr(bundle, 'name', 'the model')}: catalog_repo "
                       f"{spec!r} is not a Hub id ('org/name[@rev]' or 'datasets/org/name[@rev]')")
    repo_id, rev, repo_type = parsed
    return _resolve_repo(repo_id, rev, repo_type, cache_dir=cache_dir,
                         allow_download=allow_download, token=token, refresh=False,
                         patterns=CATALOG_PATTERNS, check=False).path


def _find(model_or_bundle, rel: str, **kw) -> Path | None:
    bundle = getattr(model_or_bundle, "bundle", model_or_bundle)
    if getattr(bundle, "path", None) is not None and (Path(bundle.path) / rel).is_file():
        return Path(bundle.path) / rel
    try:
        folder = catalog_folder(bundle, **kw)
    except HubError:
        return None
    if folder is not None and (folder / rel).is_file():
        return folder / rel
    return None


def find_catalog(model_or_bundle, layer: str, **kw) -> Path | None:
    """``catalog/<layer>.json`` from the bundle folder, else from its catalog repo, else None."""
    return _find(model_or_bundle, f"catalog/{layer}.json", **kw)


def find_stats(model_or_bundle, layer: str, **kw) -> Path | None:
    """``stats/<layer>.safetensors`` from the bundle folder, else from its catalog repo."""
    return _find(model_or_bundle, f"stats/{layer}.safetensors", **kw)


__all__ = ["HubError", "Resolved", "resolve", "parse_repo_id", "looks_like_repo_id",
           "origin", "check_folder", "folder_kind", "download_file", "cached_models", "fetch_files",
           "catalog_folder", "find_catalog", "find_stats", "BUNDLE_PATTERNS", "hub_offline"]
