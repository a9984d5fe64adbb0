"""Sharing edited models: base model id + revision + edit files + model card.

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

The base weights are not copied: :func:`load_edited` resolves the base (pinned commit) with
:mod:`core.hub` and applies the edits on top of it (:class:`EditedModel`). A rank-one edit of the
embedded default is a few kilobytes. :func:`merge_edited` writes a plain full bundle instead.

::

    folder = export_edited(model, stack, "my-edit", previews=[0, 3, 7])
    edited = load_edited("my-edit")          # or "org/my-edit", or "my-edit.zip"
    zip_path = zip_edited(folder)            # one file to download
    push(folder, "me/church-no-trees")       # private repo, one atomic commit
"""
from __future__ import annotations

import copy
import dataclasses
import fnmatch
import json
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import torch

from . import Model
from .hub import EDITED_FORMAT, PICKLE_SUFFIXES, HubError, check_folder, origin

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


# --------------------------------------------------------------------------- the edited model
class EditedModel(Model):
    """A :class:`core.Model` whose ``generate`` / ``features`` / ``render`` apply an EditStack on
    top of the shared, read-only base generator (``generator`` is the base; ``stack`` the edits;
    ``base`` the base Model). Interactive code that caches states should use
    ``core.edits.Renderer(edited.base).render(z, edited.stack)``, which gives the same images."""

    def __init__(self, base: Model, stack, config: dict | None = None, path: Path | None = None):
        super().__init__(base.bundle)
        self.base = base
        self.stack = stack.validate(base)
        self.share_config = dict(config or {})
        self.path = None if path is None else Path(path)
        self._deltas = stack.weight_deltas(base.generator) or None
        self._edit = stack.feature_edit()

    @property
    def name(self) -> str:
        return self.share_config.get("name") or f"{self.base.name} (edited)"

    def __repr__(self) -> str:
        return f"EditedModel({self.name!r}, base={self.base.name!r}, {self.stack!r})"

    @torch.no_grad()
    def generate(self, z, truncation: float | None = None, noise=None) -> torch.Tensor:
        t, n = self._options(truncation, noise)
        return self.generator.generate(self._z(z), truncation=t, noise=n,
                                       weight_deltas=self._deltas, edit=self._edit)

    @torch.no_grad()
    def features(self, z, layer: str, truncation: float | None = None, noise=None) -> torch.Tensor:
        g = self.generator
        g.check_layer(layer)
        t, n = self._options(truncation, noise)
        state = g.start(self._z(z), truncation=t, noise=n, weight_deltas=self._deltas)
        return g.run(state, stop=layer, edit=self._edit).x


# --------------------------------------------------------------------------- helpers
def _edits():
    try:
        from . import edits
    except ImportError as e:      # core/edits.py is written by another module owner
        raise ShareError(f"sharing needs core/edits.py (EditStack), which is not available ({e})") from None
    return edits


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


def _mask_coverage(mask) -> float:
    return round(float((mask > 0).float().mean()), 4)


def edit_summary(stack) -> list[dict]:
    """One small JSON-able dict per edit (what config.json and the card show)."""
    ed = _edits()
    out = []
    for i, e in enumerate(stack):
        if isinstance(e, ed.UnitEdit):
            item = {"type": "unit", "layer": e.layer, "n_units": len(e.units),
                    "units": list(e.units) if len(e.units) <= 64 else list(e.units[:64]) + ["..."],
                    "action": "remove" if e.values is None else "set",
                    "alpha": e.alpha, "masked": e.mask is not None}
            if e.mask is not None:
                item["mask_coverage"] = _mask_coverage(e.mask)
        else:
            item = {"type": "weight", "layer": e.layer,
                    "form": "full" if e.dense is not None else "lowrank",
                    "rank": e.rank, "shape": list(e.shape)}
        if e.label:
            item["label"] = e.label
        out.append(item)
    return out


def _describe_edit(item: dict) -> str:
    if item["type"] == "unit":
        units = ", ".join(str(u) for u in item["units"][:12])
        if item["n_units"] > 12:
            units += f", ... ({item['n_units']} units)"
        what = ("remove" if item["action"] == "remove" else "set") + f" units {units}"
        where = (f" inside a painted mask ({100 * item['mask_coverage']:.0f}% of the image)"
                 if item["masked"] else " everywhere")
        alpha = "" if item["alpha"] == 1 else f", opacity {item['alpha']:g}"
        return what + where + alpha
    if item["form"] == "full":
        return f"dense weight change ΔW {item['shape']}"
    return f"rank-{item['rank']} weight change (low-rank ΔW, shape {item['shape']})"


def _base_label(base: dict) -> str:
    if "repo_id" in base:
        return f"{base['repo_id']}@{base['revision'][:10]}" if base.get("revision") else base["repo_id"]
    return f"local:{base.get('local')}"


def _upscaled(images, min_size: int = 128):
    f = max(1, -(-min_size // images.shape[-1]))
    return images if f == 1 else torch.nn.functional.interpolate(images, scale_factor=f,
                                                                 mode="nearest")


# --------------------------------------------------------------------------- export
def export_edited(model, stack, folder, previews=(0, 1, 2, 3), *, base: dict | None = None,
                  name: str | None = None, description: str = "", seed: int = 1,
                  overwrite: bool = False) -> Path:
    """Write an edited-model folder (see the module docstring) and return it.

    ``model`` is the base :class:`core.Model` (an :class:`EditedModel` works too: its edits come
    first). ``previews`` are image numbers rendered before/after (``()`` for none). ``base``
    overrides the base reference, which is otherwise read off where the model was loaded from
    (:func:`core.hub.origin`)."""
    ed = _edits()
    from .images import parse_image_numbers, to_pil
    if isinstance(model, EditedModel):
        stack = ed.EditStack(tuple(model.stack) + tuple(stack))
        model = model.base
    stack = stack if isinstance(stack, ed.EditStack) else ed.EditStack(tuple(stack))
    if not len(stack):
        raise ShareError("nothing to share: the edit stack is empty")
    try:
        stack.validate(model)
    except (ValueError, KeyError) as e:
        raise ShareError(f"the edits do not fit the base model {model.name!r}: {e}") from None
    base = dict(base) if base else origin(model)
    if base is None:
        raise ShareError(f"model {model.name!r} exists only in memory (converted from a checkpoint);"
                         " save it as a bundle (python -m core convert) and load that, so the "
                         "edits can name their base")
    if not ("repo_id" in base or "local" in base):
        raise ShareError(f"base must be {{'repo_id', 'revision'}} or {{'local': ...}}, got {base}")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise ShareError(f"{folder}: exists and is not empty; pass overwrite=True")
        for f in ("edits.json", "edits.safetensors", CONFIG_FILE, CARD_FILE):
            (folder / f).unlink(missing_ok=True)
        shutil.rmtree(folder / PREVIEW_DIR, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    stack.to_files(folder, model)

    numbers = parse_image_numbers(previews) if previews not in (None, (), [], "") else []
    edited = EditedModel(model, stack)
    defaults = model.defaults
    for i in numbers:
        pair = torch.cat([model.render([i], seed=seed), edited.render([i], seed=seed)])
        pair = _upscaled(pair)
        (folder / PREVIEW_DIR).mkdir(exist_ok=True)
        to_pil(pair[0]).save(folder / PREVIEW_DIR / f"{i}_before.png", format="PNG")
        to_pil(pair[1]).save(folder / PREVIEW_DIR / f"{i}_after.png", format="PNG")

    licence = model.bundle.config.get("license", "other")
    cfg = {"format": EDITED_FORMAT, "version": VERSION,
           "name": name or f"{model.name}-edited", "base": base,
           "base_model": _base_model_info(model), "edits": edit_summary(stack),
           "previews": {"image_numbers": numbers, "seed": seed,
                        "truncation": defaults.get("truncation"), "noise": defaults.get("noise")},
           "license": licence}
    if description:
        cfg["description"] = description
    (folder / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    (folder / CARD_FILE).write_text(edited_card(cfg), encoding="utf-8")
    return folder


def edited_card(cfg: dict) -> str:
    """README.md (Hugging Face model card) for an edited-model folder."""
    base, info = cfg["base"], cfg["base_model"]
    lines = ["---", f"license: {cfg.get('license') or 'other'}",
             "library_name: painting-with-neurons", "pipeline_tag: unconditional-image-generation"]
    if "repo_id" in base:
        lines += [f"base_model: {base['repo_id']}", "base_model_relation: adapter"]
    lines += ["tags:", "- gan", "- interpretability", "- painting-with-neurons-edited",
              f"- {info['architecture']}", "---", "", f"# {cfg['name']}", ""]
    if cfg.get("description"):
        lines += [cfg["description"], ""]
    if "repo_id" in base:
        where = (f"[{base['repo_id']}](https://huggingface.co/{base['repo_id']}) at commit "
                 f"`{base.get('revision') or 'main'}`")
    elif base.get("local") == "default":
        where = "the embedded default model of Painting with Neurons (`default`)"
    else:
        where = (f"a local bundle folder (`{base.get('local')}`): receivers need the same folder "
                 "and must pass it as `base=`")
    lines += [f"An edited version of **{info['name']}** made with Painting with Neurons. This "
              "repo holds only the edits: loading it fetches the base model, checks it is the "
              "same one (generator sha256), and applies the edits on top.", "",
              "## Base model", "", f"- {where}",
              f"- architecture `{info['architecture']}`, {info['resolution']}x{info['resolution']}"
              f" px, z_dim {info['z_dim']}",
              f"- generator.safetensors sha256 `{info.get('generator_sha256')}`", "",
              "## Edits (applied in order)", "", "| # | kind | layer | what | label |",
              "|---|---|---|---|---|"]
    for i, item in enumerate(cfg["edits"]):
        lines.append(f"| {i} | {item['type']} | `{item['layer']}` | {_describe_edit(item)} | "
                     f"{item.get('label', '')} |")
    p = cfg.get("previews") or {}
    if p.get("image_numbers"):
        lines += ["", "## Before / after", "",
                  f"Image number i is row i of `numpy.random.RandomState({p['seed']})"
                  f".standard_normal(N*z_dim).reshape(N, z_dim)` (truncation "
                  f"{p.get('truncation')}, noise "
                  f"`{p.get('noise')}`), as in the app.", "",
                  "| image | before | after |", "|---|---|---|"]
        for i in p["image_numbers"]:
            lines.append(f"| {i} | ![before {i}]({PREVIEW_DIR}/{i}_before.png) | "
                         f"![after {i}]({PREVIEW_DIR}/{i}_after.png) |")
    lines += ["", "## Use", "", "```python", "from core import share",
              "model = share.load_edited(\"THIS_REPO_OR_FOLDER\")   # a core.Model",
              "images = model.render(\"0-7\")", "```", "",
              "`python -m core sample THIS_REPO_OR_FOLDER --images 0-7` renders a grid; "
              "`share.merge_edited(...)` / `python -m core push FOLDER ORG/NAME --merge` writes "
              "the weights with the edits folded in (weight edits; on ProGAN also unmasked, "
              "full-opacity unit edits).", "",
              "## Files", "", "- `edits.json`, `edits.safetensors`: the edit stack (no pickles)",
              "- `config.json`: base model reference and a summary of the edits",
              f"- `{PREVIEW_DIR}/`: before/after previews", "",
              "## Licence", "",
              f"Inherited from the base model (`{cfg.get('license') or 'other'}`): the edits are "
              "useless without the base weights, which keep their own licence and terms. Check "
              "those before redistributing.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- load
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


def _open_base(base: dict, device, **kw) -> Model:
    from . import load_model
    from .hub import load_model_from_hub
    if "repo_id" in base:
        src = base["repo_id"] + (f"@{base['revision']}" if base.get("revision") else "")
        return load_model_from_hub(src, device, **kw)
    return load_model(base["local"], device=device)


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


def load_edited(source, device="cpu", *, base=None, check: bool = True, cache_dir=None,
                allow_download: bool = True, token=None) -> EditedModel:
    """Open an edited model (folder, Hub id ``org/name[@rev]`` or an uploaded ``.zip``) on top of
    its base. ``base`` (a Model or a source) overrides config.json's base. Raises ShareError /
    HubError / ValueError (bad edits: NaN, wrong shapes, unknown layers)."""
    from .hub import resolve
    from . import load_model
    ed = _edits()
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
        stack = ed.EditStack.from_files(folder, base_model)
    except FileNotFoundError as e:
        raise ShareError(str(e)) from None
    except (ValueError, KeyError) as e:
        raise ShareError(f"{where}: the edits do not fit the base model {base_model.name!r}: "
                         f"{e}") from None
    return EditedModel(base_model, stack, cfg, folder)


# --------------------------------------------------------------------------- merge
def _foldable(e, g) -> bool:
    """A unit edit that can be written into the weights exactly: no mask (or an all-ones mask),
    opacity 1, on a family that folds constant units (ProGAN: conv rows 0, bias = the value)."""
    return (g.can_fold_constant_units and e.alpha == 1.0
            and (e.mask is None or bool((e.mask >= 1).all())))


def merge_edited(source, dest, *, name: str | None = None, overwrite: bool = False,
                 verify_images=(0, 1), **load_kw) -> Path:
    """Write a plain full bundle at ``dest`` with the edits folded into the weights.

    Weight edits are exact (``W + ΔW``). Unit edits change features, not weights, so they are
    refused with a clear message, except the safe subset that is exact: on ProGAN, unit edits
    with no mask and opacity 1 (units set to a constant everywhere: their conv rows become 0 and
    their bias the value). ``verify_images`` are rendered both ways and must agree."""
    ed = _edits()
    from .bundle import save_bundle
    edited = source if isinstance(source, EditedModel) else load_edited(source, **load_kw)
    g0 = edited.generator
    bad = [f"edit {i} (unit edit at {e.layer}{', masked' if e.mask is not None else ''}"
           f"{'' if e.alpha == 1 else f', opacity {e.alpha:g}'})"
           for i, e in enumerate(edited.stack)
           if isinstance(e, ed.UnitEdit) and not e.is_noop and not _foldable(e, g0)]
    if bad:
        raise ShareError("cannot merge: " + "; ".join(bad) + " change features, not weights, "
                         "and cannot be written into a plain bundle exactly (only weight edits, "
                         "and on ProGAN unmasked full-opacity unit edits, can). Share the edited "
                         "model (edits + base id) instead, or undo those edits")
    g = copy.deepcopy(g0)
    with torch.no_grad():
        for layer, d in edited.stack.weight_deltas(g).items():
            g.main_weight(layer).add_(d)
        for e in edited.stack:
            if isinstance(e, ed.UnitEdit) and not e.is_noop:
                g.fold_constant_units(e.layer, e.units, e.values or (0.0,) * len(e.units))
    bcfg = edited.base.bundle.config
    extra = {"edited_from": {"base": (edited.share_config.get("base") or origin(edited.base)),
                             "edits": edit_summary(edited.stack)},
             "defaults": edited.base.defaults}
    if "license" in bcfg:
        extra["license"] = bcfg["license"]
    dest = save_bundle(g, dest, name=name or edited.name.replace(" ", "-"),
                       source=bcfg.get("source"), extra_config=extra, overwrite=overwrite)
    if verify_images:
        from . import load_model
        merged = load_model(dest)
        a, b = merged.render(verify_images), edited.render(verify_images)
        err = float((a - b).abs().max())
        if err > 1e-4:
            raise ShareError(f"{dest}: merged weights render differently from the edited model "
                             f"(max abs difference {err:.3g}); do not use this bundle")
    with open(Path(dest) / CARD_FILE, "a", encoding="utf-8") as f:
        f.write("\n## Edits merged into these weights\n\n"
                f"Base: {_base_label(extra['edited_from']['base'] or {'local': None})}.\n\n"
                "| # | kind | layer | what |\n|---|---|---|---|\n")
        for i, item in enumerate(extra["edited_from"]["edits"]):
            f.write(f"| {i} | {item['type']} | `{item['layer']}` | {_describe_edit(item)} |\n")
    return Path(dest)


# --------------------------------------------------------------------------- zip
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
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:
                            raise ShareError(f"{zip_file.name}: more than {max_bytes / 2**20:.0f} "
                                             "MiB when extracted")
                        dst.write(chunk)
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


# --------------------------------------------------------------------------- push
@dataclasses.dataclass
class PushResult:
    repo_id: str
    url: str | None
    commit: str | None
    files: list[tuple[str, int]]          # (path in repo, bytes)


def shareable_files(folder) -> list[tuple[str, Path]]:
    """``[(path in repo, file)]`` of a bundle or edited-model folder, hidden files skipped.
    ShareError for pickles or a folder that is neither kind."""
    folder = Path(folder)
    kind = check_folder(folder)
    if kind == "edited":
        read_edited_config(folder)
    else:
        from .bundle import read_config
        read_config(folder)
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in PurePosixPath(rel).parts) or not p.is_file():
            continue
        if p.suffix.lower() in PICKLE_SUFFIXES:
            raise ShareError(f"{p}: refusing to upload a pickled file; bundles hold safetensors "
                             "only (convert it with `python -m core convert`)")
        out.append((rel, p))
    return out


def _push_error(e: BaseException, repo_id: str) -> str:
    import huggingface_hub as hf
    from .hub import hub_offline
    if isinstance(e, hf.errors.OfflineModeIsEnabled) or hub_offline():
        return f"{repo_id}: cannot push, the Hub is switched off (HF_HUB_OFFLINE=1)"
    if isinstance(e, hf.errors.HfHubHTTPError):
        code = getattr(getattr(e, "response", None), "status_code", None)
        if code in (401, 403):
            return (f"{repo_id}: the token may not write to this namespace (HTTP {code}); use a "
                    "token with write access to it")
        return f"{repo_id}: the Hub refused the push ({str(e).strip().splitlines()[0][:200]})"
    return f"{repo_id}: push failed, Hub unreachable? ({type(e).__name__}: {str(e)[:200]})"


def push(folder, repo_id: str, token: str | None = None, private: bool = True,
         commit_message: str | None = None) -> PushResult:
    """Upload a bundle or edited-model folder to the Hub model repo ``repo_id`` in one atomic
    commit (``create_repo(exist_ok=True)`` + ``create_commit`` with one CommitOperationAdd per
    file). The token comes from ``token``, else ``HF_TOKEN``, else a stored login. New repos are
    private unless ``private=False``."""
    import huggingface_hub as hf
    from .hub import parse_repo_id
    parsed = parse_repo_id(repo_id)
    if parsed is None or parsed[1] is not None or parsed[2] != "model":
        raise ShareError(f"{repo_id!r}: expected a model repo id 'org/name'")
    files = shareable_files(folder)
    if check_folder(folder) == "edited":
        base = read_edited_config(folder)["base"]
        if base.get("local") not in (None, "default"):
            raise ShareError(f"{folder}: its base is the local folder {base['local']}, which "
                             "nobody else has; push the base bundle first (python -m core push "
                             "BASE ORG/BASE), load it by id, and export the edits again")
    token = token or os.environ.get("HF_TOKEN") or hf.get_token()
    if not token:
        raise ShareError(f"{repo_id}: no Hugging Face token; pass --token, set HF_TOKEN, or run "
                         "`hf auth login`")
    if commit_message is None:
        kind = check_folder(folder)
        commit_message = ("Edited model (Painting with Neurons): edits + model card"
                          if kind == "edited" else "Model bundle (Painting with Neurons)")
    api = hf.HfApi(token=token)
    ops = [hf.CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(p)) for rel, p in files]
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations=ops, commit_message=commit_message,
                                 repo_type="model")
    except Exception as e:  # noqa: BLE001 - one clear error for every way the Hub can fail
        raise HubError(_push_error(e, repo_id)) from None
    return PushResult(repo_id, str(getattr(url, "url", url)) if url is not None else None,
                      getattr(info, "oid", None), [(rel, p.stat().st_size) for rel, p in files])


__all__ = ["EditedModel", "ShareError", "export_edited", "edited_card", "load_edited",
           "read_edited_config", "check_base", "merge_edited", "zip_edited", "safe_unzip",
           "push", "PushResult", "shareable_files", "edit_summary", "EDITED_FILES"]
