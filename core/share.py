"""Sharing edited models: base model id + revision + edit files + model card.

An *edited model* is a small folder (or Hub model repo) in the format of :mod:`core.edited_files`.
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
import json
import os
import shutil
from pathlib import Path, PurePosixPath

import torch

from . import edits as ed
from .bundle import load_bundle, read_config, save_bundle
from .edited_files import (CARD_FILE, CONFIG_FILE, EDITED_FILES, PREVIEW_DIR, VERSION, ShareError,
                           _base_model_info, check_base, read_edited_config, safe_unzip, zip_edited)
from .hub import EDITED_FORMAT, PICKLE_SUFFIXES, HubError, check_folder, hub_offline, origin, parse_repo_id
from .model import EditedModel, Model
from .sources import load_edited


# --------------------------------------------------------------------------- helpers


def _mask_coverage(mask) -> float:
    return round(float((mask > 0).float().mean()), 4)


def edit_summary(stack) -> list[dict]:
    """One small JSON-able dict per edit (what config.json and the card show)."""
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
        merged = Model(load_bundle(dest))
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


def push_catalogs(folder, repo_id: str, *, title: str, token: str | None = None,
                  private: bool = True) -> PushResult:
    """Upload the catalogs ``folder/*.json`` (``python -m core dissect`` output) as
    ``catalog/<layer>.json`` of the Hub model repo ``repo_id``, with a README saying what
    (``title``: the model and segmenter). A model whose config.json names this repo as its
    ``"catalog_repo"`` then finds them (:func:`core.hub.find_catalog`)."""
    import huggingface_hub as hf
    parsed = parse_repo_id(repo_id)
    if parsed is None or parsed[1] is not None or parsed[2] != "model":
        raise ShareError(f"{repo_id!r}: expected a model repo id 'org/name'")
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise ShareError(f"{folder}: no catalog (.json) to push")
    token = token or os.environ.get("HF_TOKEN") or hf.get_token()
    if not token:
        raise ShareError(f"{repo_id}: no Hugging Face token; pass --token, set HF_TOKEN, or run "
                         "`hf auth login`")
    readme = (f"# Unit catalogs: {title}\n\nMade with Painting with Neurons (`python -m core "
              f"dissect`). Layers: {', '.join(p.stem for p in files)}. Name this repo as "
              "`\"catalog_repo\"` in a model's config.json to use them.\n").encode()
    ops = [hf.CommitOperationAdd(path_in_repo=f"catalog/{p.name}", path_or_fileobj=str(p)) for p in files]
    ops.append(hf.CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=readme))
    api = hf.HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations=ops, repo_type="model",
                                 commit_message=f"Unit catalogs: {title}")
    except Exception as e:  # noqa: BLE001 - one clear error for every way the Hub can fail
        raise HubError(_push_error(e, repo_id)) from None
    return PushResult(repo_id, str(getattr(url, "url", url)) if url is not None else None,
                      getattr(info, "oid", None),
                      [(f"catalog/{p.name}", p.stat().st_size) for p in files] + [("README.md", len(readme))])


__all__ = ["EditedModel", "ShareError", "export_edited", "edited_card", "load_edited",
           "read_edited_config", "check_base", "merge_edited", "zip_edited", "safe_unzip",
           "push", "push_catalogs", "PushResult", "shareable_files", "edit_summary", "EDITED_FILES"]
