"""The edited-model folder format: its files, config.json and the base-model check, and safe
zips (what :mod:`core.share` writes and :func:`core.sources.load_edited` reads).

An *edited model* is a small folder (or Hub model repo)::

    config.json          {"format": "painting-with-neurons-edited", "version": 1,
                          "base": {"repo_id": "org/name", "revision": "<commit>"} | {"local": "default"},
                          "base_model": {"name", "architecture", "kwargs", "resolution", "z_dim",
                                         "generator_sha256"},
                          "edits": [summary of each edit], "previews": {...}, "license": ...}
    edits.json           the EditStack (core.edits: EditStack.to_files / from_files)
    edits.safetensors    its tensors (masks, low-rank lam/dirs or dense deltas)
    README.md            model card: base model, what was edited, before/after previews, licence
    previews/<i>_before.png, previews/<i>_after.png
"""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from .bundle import copy_capped
from .hub import EDITED_FORMAT, PICKLE_SUFFIXES, check_folder

VERSION = 1
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
PREVIEW_DIR = "previews"
# What an edited-model folder / zip may hold (anything else in an uploaded zip is skipped).
EDITED_FILES = ("config.json", "edits.json", "edits.safetensors", "README.md", "previews/*.png")
MAX_ZIP_BYTES = 256 * 2**20       # uncompressed total accepted from an uploaded zip
MAX_ZIP_FILES = 200
MAX_ZIP_RATIO = 200               # uncompressed / compressed per entry (zip bombs)
_SHA_CACHE: dict[tuple, str] = {}


class ShareError(ValueError):
    """An edited model that cannot be exported, loaded, merged, unzipped or pushed; the message
    says which file or edit and why."""


def _generator_sha256(model) -> str | None:
    from .bundle import sha256_file
    bundle = model.bundle
    if bundle.path is None:
        return (bundle.config.get("source") or {}).get("sha256")
    f = Path(bundle.path) / "generator.safetensors"
    if not f.is_file():
        return None
    st = f.stat()
    key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_file(f)
    return _SHA_CACHE[key]


def _base_model_info(model) -> dict:
    b = model.bundle
    return {"name": b.name, "architecture": b.architecture,
            "kwargs": b.config.get("kwargs"), "resolution": model.resolution,
            "z_dim": model.z_dim, "generator_sha256": _generator_sha256(model)}


def read_edited_config(folder) -> dict:
    """config.json of an edited-model folder, validated (ShareError otherwise)."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise ShareError(f"{path}: missing; an edited model names its base model in config.json "
                         "(or pass base=...)")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ShareError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != EDITED_FORMAT:
        raise ShareError(f"{path}: not an edited model (format must be {EDITED_FORMAT!r}, got "
                         f"{cfg.get('format') if isinstance(cfg, dict) else type(cfg).__name__!r})")
    if not isinstance(cfg.get("version"), int) or cfg["version"] > VERSION:
        raise ShareError(f"{path}: unsupported edited-model version {cfg.get('version')!r}")
    base = cfg.get("base")
    if not isinstance(base, dict) or not (isinstance(base.get("repo_id"), str)
                                          or isinstance(base.get("local"), str)):
        raise ShareError(f"{path}: 'base' must be {{\"repo_id\", \"revision\"}} or "
                         f"{{\"local\": \"default\"}}, got {base!r}")
    return cfg


def check_base(cfg: dict, model, where="edited model") -> None:
    """Raise ShareError unless ``model`` is the base the edits were made for (architecture,
    kwargs and, when recorded, the generator weights' sha256)."""
    want = cfg.get("base_model") or {}
    have = _base_model_info(model)
    for key in ("architecture", "kwargs", "resolution", "z_dim"):
        if want.get(key) is not None and want[key] != have[key]:
            raise ShareError(f"{where}: made for a different base model: {key} is {want[key]!r} "
                             f"in config.json, {have[key]!r} in {model.name!r}")
    sha_w, sha_h = want.get("generator_sha256"), have.get("generator_sha256")
    if sha_w and sha_h and sha_w != sha_h:
        raise ShareError(f"{where}: made for base weights with sha256 {sha_w[:12]}... "
                         f"({want.get('name')}), but {model.name!r} has {sha_h[:12]}...: "
                         "a different model or revision (pass check=False to apply anyway)")


def _allowed(rel: str) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) for p in EDITED_FILES)


def zip_edited(folder, dest=None) -> Path:
    """Zip an edited-model folder (its known files only) into ``dest`` (default
    ``<folder>.zip``) under a top folder named like it; returns the zip's path."""
    folder = Path(folder)
    if check_folder(folder) != "edited":
        raise ShareError(f"{folder}: not an edited-model folder (no edits.json)")
    dest = Path(dest) if dest is not None else folder.with_name(folder.name + ".zip")
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and _allowed(p.relative_to(folder).as_posix()))
    tmp = dest.with_name(dest.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in files:
            z.write(p, f"{folder.name}/{p.relative_to(folder).as_posix()}")
    os.replace(tmp, dest)
    return dest


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "has an absolute or Windows path"
    if any(part == ".." for part in PurePosixPath(name).parts):
        return "points outside the folder (..)"
    if "\x00" in name:
        return "has a NUL in its name"
    return None


def safe_unzip(zip_file, dest, *, max_bytes: int = MAX_ZIP_BYTES, max_files: int = MAX_ZIP_FILES,
               max_ratio: float = MAX_ZIP_RATIO) -> Path:
    """Extract an uploaded edited-model zip into the empty or new folder ``dest``; returns it.

    Rejects (ShareError, nothing left behind) path traversal (``..``), absolute paths, symlinks,
    pickles, more than ``max_files`` entries, more than ``max_bytes`` uncompressed, and entries
    compressed more than ``max_ratio`` times. A single top folder is stripped; files other than
    :data:`EDITED_FILES` (``__MACOSX/``, ``.DS_Store``...) are skipped."""
    zip_file, dest = Path(zip_file), Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise ShareError(f"{dest}: exists and is not empty")
    try:
        z = zipfile.ZipFile(zip_file)
    except (zipfile.BadZipFile, OSError) as e:
        raise ShareError(f"{zip_file.name}: not a readable zip file ({e})") from None
    with z:
        infos = z.infolist()
        if len(infos) > max_files:
            raise ShareError(f"{zip_file.name}: {len(infos)} entries, more than the {max_files} "
                             "an edited model can have")
        for info in infos:
            why = _entry_problem(info)
            if why:
                raise ShareError(f"{zip_file.name}: refusing entry {info.filename!r}: it {why}")
            if PurePosixPath(info.filename).suffix.lower() in PICKLE_SUFFIXES:
                raise ShareError(f"{zip_file.name}: refusing entry {info.filename!r}: pickled "
                                 "files are never loaded (they can run code)")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise ShareError(f"{zip_file.name}: {total / 2**20:.1f} MiB uncompressed, more than "
                             f"the {max_bytes / 2**20:.0f} MiB limit")
        files = [i for i in infos if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
        tops = {PurePosixPath(i.filename).parts[0] for i in files}
        strip = len(tops) == 1 and all(len(PurePosixPath(i.filename).parts) > 1 for i in files)
        plan = []
        for info in files:
            parts = PurePosixPath(info.filename).parts[1 if strip else 0:]
            rel = "/".join(parts)
            if not _allowed(rel):
                continue
            if info.compress_size and info.file_size / info.compress_size > max_ratio \
                    and info.file_size > 1 << 20:
                raise ShareError(f"{zip_file.name}: entry {info.filename!r} is compressed "
                                 f"{info.file_size / info.compress_size:.0f}x (a zip bomb?)")
            plan.append((info, rel))
        if not any(rel == "edits.json" for _, rel in plan):
            raise ShareError(f"{zip_file.name}: no edits.json inside; not an edited model "
                             "(made with Export / share.zip_edited)")
        created = not dest.exists()
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        written = 0
        try:
            for info, rel in plan:
                out = (dest / rel).resolve()
                if root not in out.parents:
                    raise ShareError(f"{zip_file.name}: refusing entry {info.filename!r}: it "
                                     "points outside the folder")
                out.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(out, "wb") as dst:
                    written += copy_capped(src, dst, max_bytes - written, lambda: ShareError(
                        f"{zip_file.name}: more than {max_bytes / 2**20:.0f} MiB when extracted"))
        except (ShareError, zipfile.BadZipFile, OSError, EOFError) as e:
            if created:
                shutil.rmtree(dest, ignore_errors=True)
            else:
                for p in sorted(dest.rglob("*"), reverse=True):
                    p.unlink() if p.is_file() else p.rmdir()
            if isinstance(e, ShareError):
                raise
            raise ShareError(f"{zip_file.name}: corrupt zip ({e})") from None
    return dest
