"""Known models: the model picker's list (``models/known_models.json``) and how each is fetched.

::

    model = core.load_model("stylegan2-church")      # a known id (or alias) opens through here

An entry says where its weights live; :func:`open_known` tries, in this order:

1. ``"local"``: the embedded default;
2. the copy converted earlier (``$PWN_CACHE_DIR/converted/<id>/``), so a model fetched once
   opens offline;
3. ``"repo_id"`` without ``"file"``: a bundle folder on the Hub (a mirror published with
   ``python -m core convert SRC DEST --push ORG/NAME``). Repo ids in the placeholder org
   ``painting-with-neurons`` stand for mirrors not published yet: set ``PWN_HUB_ORG`` to the org
   that publishes them;
4. ``"repo_id"`` + ``"file"``: an original checkpoint in a Hub model repo (rosinality ``.pt``),
   through the HF cache, at ``"revision"`` when the entry pins one;
5. ``"url"``, then each of ``"alt_urls"``: the original hosts. Their torch.hub file names end in
   the first hex digits of the file's sha256 (``"sha256_prefix"``), which is checked.

The checkpoints of 4 and 5 are pickles: they are opened only with ``torch.load(weights_only=True)``
(:func:`core.bundle.read_checkpoint` refuses a file holding code and checks the expected keys),
then converted once into a safetensors bundle with the entry's ``"config"`` (paint and rewrite
layers, truncation). A file's sha256 is recorded the first time it is fetched
(``$PWN_CACHE_DIR/known_sha256.json``); a later download with another digest is refused.

The rewriting paper's saved rules for a known model ship in ``models/rules/<id>/``
(:func:`rule_files`): the Rewrite tab offers them as presets when that model is loaded.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from . import paths
from .bundle import (BundleError, atomic_write, copy_capped, load_bundle, read_checkpoint, save_bundle,
                     scratch_root, sha256_file)
from .hub import (HubError, cached_snapshot, download_file, explain_error, folder_kind, huggingface,
                  hub_down, hub_offline, resolve, resolve_local, BUNDLE_PATTERNS)
from .model import Model

KNOWN_MODELS_FILE = paths.MODELS_DIR / "known_models.json"
RULES_DIR = paths.MODELS_DIR / "rules"
PLACEHOLDER_ORG = "painting-with-neurons"
ORG_ENV = "PWN_HUB_ORG"           # replaces the placeholder org of known_models.json entries
MAX_DOWNLOAD_BYTES = 4 << 30      # the largest original checkpoint (faces, 1024 px) is ~380 MB
URL_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------- the list
def known_models(path=None, org: str | None = None) -> list[dict]:
    """The model picker's entries from ``models/known_models.json``. ``org`` (or env
    ``PWN_HUB_ORG``) replaces the placeholder org ``painting-with-neurons`` in repo ids; an entry
    still in the placeholder org is marked ``"placeholder": True`` (no mirror to fetch)."""
    path = Path(path) if path is not None else KNOWN_MODELS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise HubError(f"{path}: cannot read the known-models list ({e})") from None
    placeholder = data.get("placeholder_org", PLACEHOLDER_ORG)
    org = org or os.environ.get(ORG_ENV) or placeholder
    out = []
    for entry in data.get("models", []):
        e = dict(entry)
        rid = e.get("repo_id")
        if rid and rid.split("/", 1)[0] == placeholder:
            e["repo_id"] = f"{org}/{rid.split('/', 1)[1]}"
            e["placeholder"] = org == placeholder
        out.append(e)
    names = [n for e in out for n in [e.get("id"), *e.get("aliases", [])]]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise HubError(f"{path}: duplicate model ids or aliases {dup}")
    return out


def known_model(model_id: str, **kw) -> dict:
    """The entry with this id or alias; HubError listing the known ids otherwise."""
    for e in known_models(**kw):
        if model_id == e["id"] or model_id in e.get("aliases", []):
            return e
    raise HubError(f"unknown model id {model_id!r}; known: "
                   f"{', '.join(e['id'] for e in known_models(**kw))}")


def is_known_id(source) -> bool:
    if not isinstance(source, str) or "/" in source or "\\" in source:
        return False
    try:
        known_model(source)
        return True
    except HubError:
        return False


def _url_names(entry: dict) -> list[str]:
    urls = [entry.get("url"), *entry.get("alt_urls", [])]
    return [Path(urllib.parse.urlparse(u).path).name for u in urls if u]


def entry_for_file(filename, **kw) -> dict | None:
    """The known entry whose checkpoint file (on the Hub or at its original URL) has this name."""
    name = Path(filename).name
    return next((e for e in known_models(**kw)
                 if e.get("file") == name or name in _url_names(e)), None)


def entry_source(entry: dict) -> str:
    """What :func:`core.hub.resolve` takes for an entry's local bundle or Hub mirror."""
    if entry.get("local"):
        return entry["local"]
    rev = entry.get("revision")
    return entry["repo_id"] + (f"@{rev}" if rev else "")


def _mirror(entry: dict) -> bool:
    return bool(entry.get("repo_id")) and not entry.get("file") and not entry.get("placeholder")


def rule_files(model) -> dict[str, Path]:
    """The shipped rule files (``models/rules/<id>/*.json``) of the known model that ``model``
    was converted from, by name; {} for any other model."""
    source = (getattr(getattr(model, "bundle", None), "config", None) or {}).get("source") or {}
    folder = RULES_DIR / str(source.get("known_id", ""))
    if not source.get("known_id") or not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.json"))}


# --------------------------------------------------------------------------- where a copy is
def converted_folder(entry: dict) -> Path:
    return scratch_root() / "converted" / entry["id"]


def _converted(entry: dict) -> Path | None:
    folder = converted_folder(entry)
    if folder_kind(folder) != "bundle":
        return None
    try:
        source = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("source", {})
    except (OSError, json.JSONDecodeError):
        return None
    names = {entry.get("file"), *_url_names(entry)} - {None}
    return folder if source.get("file") in names else None


def _cached_hub_file(entry: dict, cache_dir=None) -> Path | None:
    hit = huggingface().try_to_load_from_cache(entry["repo_id"], entry["file"], cache_dir=cache_dir,
                                               revision=entry.get("revision"))
    return Path(hit) if isinstance(hit, str) and Path(hit).is_file() else None


_PROBES: dict[tuple, tuple[float, str]] = {}
PROBE_TTL_S = 600.0


def _probe(repo_id: str, filename: str, rev: str | None, token, timeout: float) -> str:
    key = (repo_id, filename, rev)
    hit = _PROBES.get(key)
    if hit and time.monotonic() - hit[0] < PROBE_TTL_S:
        return hit[1]
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    fut = pool.submit(huggingface().file_exists, repo_id, filename, revision=rev, token=token)
    try:
        status = ("available" if fut.result(timeout=timeout) else
                  f"unavailable: no {filename} in {repo_id} on the Hub")
    except concurrent.futures.TimeoutError:
        status = f"unavailable: the Hub did not answer within {timeout:g} s"
    except Exception as e:  # noqa: BLE001
        status = "unavailable: " + explain_error(e, repo_id, rev).split(": ", 1)[-1]
    finally:
        pool.shutdown(wait=False)
    _PROBES[key] = (time.monotonic(), status)
    return status


def availability(entry: dict, *, cache_dir=None, probe: bool = True, token=None,
                 timeout: float = 5.0) -> str:
    """``"available"`` (can be fetched, or is the embedded default), ``"cached"`` (opens offline)
    or ``"unavailable: <reason>"``; the picker shows the reason. ``probe=False`` never touches the
    network (an uncached entry is then "available" unless offline)."""
    if entry.get("local"):
        try:
            resolve_local(entry["local"])
            return "available"
        except HubError as e:
            return f"unavailable: {e}"
    if _converted(entry) is not None:
        return "cached"
    if entry.get("repo_id") and entry.get("file") and _cached_hub_file(entry, cache_dir):
        return "cached"
    if _mirror(entry):
        try:
            snap = cached_snapshot(entry["repo_id"], entry.get("revision"), "model", cache_dir,
                                   BUNDLE_PATTERNS, incomplete_ok=True)
        except HubError as e:
            return f"unavailable: {e}"
        if snap is not None and folder_kind(snap) is not None:
            return "cached"
    has_hub = _mirror(entry) or bool(entry.get("repo_id") and entry.get("file"))
    if not has_hub and not entry.get("url"):
        return "unavailable: no Hub repo or download address for this entry"
    if hub_offline():
        return "unavailable: offline (HF_HUB_OFFLINE=1) and not in the local cache"
    if not has_hub or entry.get("url") or not probe:
        return "available"
    down = hub_down()
    if down:
        return f"unavailable: not cached and {down}"
    return _probe(entry["repo_id"], entry.get("file") or "generator.safetensors",
                  entry.get("revision"), token, timeout)


# --------------------------------------------------------------------------- fetching
def _watch_hub_download(entry: dict, cache_dir, progress) -> threading.Event:
    """Report the bytes of the partial blob huggingface_hub writes while it downloads."""
    from .hub import cache_root
    blobs = cache_root(cache_dir) / f"models--{entry['repo_id'].replace('/', '--')}" / "blobs"
    total = None
    try:
        hf = huggingface()
        total = hf.get_hf_file_metadata(hf.hf_hub_url(entry["repo_id"], entry["file"],
                                                      revision=entry.get("revision")),
                                        timeout=5).size
    except Exception:  # noqa: BLE001 - the size only improves the progress line
        pass
    done = threading.Event()

    def watch():
        while not done.wait(0.5):
            n = sum(p.stat().st_size for p in blobs.glob("*.incomplete") if p.is_file())
            progress(n, total, "download")
    threading.Thread(target=watch, daemon=True).start()
    return done


def _from_hub_file(entry: dict, *, cache_dir, allow_download, token, progress) -> tuple[Path, dict]:
    cached = _cached_hub_file(entry, cache_dir)
    watcher = None
    if cached is None and progress and allow_download and not hub_offline():
        watcher = _watch_hub_download(entry, cache_dir, progress)
    try:
        path = download_file(entry["repo_id"], entry["file"], entry.get("revision"),
                             cache_dir=cache_dir, token=token, allow_download=allow_download)
    finally:
        if watcher is not None:
            watcher.set()
    commit = path.parent.name if path.parent.parent.name == "snapshots" else None
    return path, {"repo_id": entry["repo_id"], "revision": commit, "file": entry["file"]}


def download_url(url: str, dest: Path, *, progress=None, timeout: float = URL_TIMEOUT_S,
                 max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """``url`` into ``dest`` (written as ``dest.part``, renamed when complete). Raises HubError."""
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise HubError(f"{url}: only http(s) addresses are downloaded")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            if total and total > max_bytes:
                raise HubError(f"{url}: {total / 1e6:.0f} MB is more than the "
                               f"{max_bytes / 1e6:.0f} MB a checkpoint may have")
            n = copy_capped(r, f, max_bytes,
                            lambda: HubError(f"{url}: larger than the {max_bytes / 1e6:.0f} MB a "
                                             "checkpoint may have"),
                            progress and (lambda done: progress(done, total, "download")))
        if total and n != total:
            raise HubError(f"{url}: the download stopped at {n} of {total} bytes")
    except HubError:
        part.unlink(missing_ok=True)
        raise
    except (OSError, ValueError) as e:        # URLError/HTTPError are OSErrors
        part.unlink(missing_ok=True)
        raise HubError(f"{url}: download failed ({str(e).splitlines()[0][:200] or type(e).__name__})") from None
    os.replace(part, dest)
    return dest


def _from_urls(entry: dict, *, progress) -> tuple[Path, dict]:
    if hub_offline():
        raise HubError("offline (HF_HUB_OFFLINE=1): the original host is not tried")
    errors = []
    for url in [entry.get("url"), *entry.get("alt_urls", [])]:
        if not url:
            continue
        dest = scratch_root() / "downloads" / Path(urllib.parse.urlparse(url).path).name
        try:
            if not dest.is_file():
                download_url(url, dest, progress=progress)
            verify_checkpoint(dest, entry)
            return dest, {"url": url, "file": dest.name}
        except HubError as e:
            dest.unlink(missing_ok=True)       # a wrong or partial file is not kept
            errors.append(str(e))
    raise HubError("; ".join(errors) or "no download address")


def _check_recorded_sha256(key: str, digest: str) -> None:
    """Trust on first use: the digest a file had when first fetched is the one it must keep."""
    record = scratch_root() / "known_sha256.json"
    try:
        seen = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        seen = {}
    if key in seen and seen[key] != digest:
        raise HubError(f"{key}: sha256 {digest[:16]}... differs from the {seen[key][:16]}... "
                       f"recorded when it was first downloaded (remove its line from "
                       f"{record.name} in the scratch cache to accept the new file)")
    if key not in seen:
        seen[key] = digest
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(record, json.dumps(seen, indent=1, sort_keys=True))


def _convert(entry: dict, src: Path, where: dict) -> Path:
    # the family is checked, not the size: a tiny model in the same layout stands in for tests
    b = read_checkpoint(src, name=entry["id"], family=entry.get("family"))
    g = b.generator
    digest = b.config["source"]["sha256"]
    _check_recorded_sha256(where.get("url") or f"{where['repo_id']}/{where['file']}", digest)
    if entry.get("sha256") and digest != entry["sha256"].lower():
        raise HubError(f"{src.name}: sha256 {digest} is not the {entry['sha256']} listed for "
                       f"{entry['id']!r}")
    source = {**where, "sha256": digest, "known_id": entry["id"]}
    dest = converted_folder(entry)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry['id']}-", dir=dest.parent))
    try:
        save_bundle(g, tmp / "bundle", name=entry["id"], source=source,
                    extra_config=entry.get("config"))
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp / "bundle", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def open_known(entry_or_id, device="cpu", *, cache_dir=None, allow_download: bool = True,
               token=None, progress=None):
    """Open a known model (an entry or an id/alias), fetching and converting it when needed.
    ``progress(done, total, stage)`` (the engine's progress protocol) hears about downloads
    (bytes; ``stage`` "download") and the conversion ("convert"). Raises HubError naming what
    each source said."""
    entry = entry_or_id if isinstance(entry_or_id, dict) else known_model(entry_or_id)
    if entry.get("local"):
        return Model(load_bundle(resolve_local(entry["local"]).path, device=device))
    done = _converted(entry)
    if done is not None:
        return Model(load_bundle(done, device=device))
    errors = []
    if _mirror(entry):
        try:
            r = resolve(entry_source(entry), cache_dir=cache_dir, allow_download=allow_download,
                        token=token)
            return Model(load_bundle(r.path, device=device))
        except (HubError, BundleError) as e:
            errors.append(str(e))
    fetchers = []
    if entry.get("repo_id") and entry.get("file"):
        fetchers.append(lambda: _from_hub_file(entry, cache_dir=cache_dir, allow_download=allow_download,
                                               token=token, progress=progress))
    if entry.get("url") and allow_download:
        fetchers.append(lambda: _from_urls(entry, progress=progress))
    for fetch in fetchers:
        try:
            path, where = fetch()
            if progress:
                progress(0, None, "convert")
            return Model(load_bundle(_convert(entry, path, where), device=device))
        except (HubError, BundleError) as e:
            errors.append(str(e))
    if not errors:
        errors.append("no Hub repo or download address" if allow_download else "downloads are turned off")
    raise HubError(f"{entry['id']}: could not be opened: " + "; ".join(errors))


def verify_checkpoint(path, entry: dict) -> dict:
    """Compare a checkpoint file's sha256 with the entry's ``sha256`` (full) or, for a file named
    as at its original URL, its ``sha256_prefix`` (the torch.hub file-name suffix). Returns
    ``{"file", "sha256", "checked": "sha256" | "sha256_prefix" | None, "verified": bool}``;
    raises HubError on a mismatch."""
    path = Path(path)
    if not path.is_file():
        raise HubError(f"{path}: no such checkpoint file")
    digest = sha256_file(path)
    full, prefix = entry.get("sha256"), entry.get("sha256_prefix")
    if prefix and _url_names(entry) and path.name not in _url_names(entry):
        prefix = None                   # the prefix belongs to the original host's file
    checked, ok, want = None, False, None
    if full:
        checked, ok, want = "sha256", digest == full.lower(), full
    elif prefix:
        checked, ok, want = "sha256_prefix", digest.startswith(prefix.lower()), prefix + "..."
    if checked and not ok:
        raise HubError(f"{path}: sha256 {digest} does not match {entry.get('id')!r} "
                       f"(expected {want}); not the original checkpoint")
    return {"file": path.name, "sha256": digest, "checked": checked, "verified": bool(checked)}


__all__ = ["known_models", "known_model", "is_known_id", "entry_for_file", "entry_source",
           "availability", "open_known", "verify_checkpoint", "rule_files", "download_url",
           "converted_folder", "KNOWN_MODELS_FILE", "ORG_ENV"]
