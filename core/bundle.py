"""Model bundles: one folder, laid out like a Hugging Face model repo.

::

    config.json              {"format": "painting-with-neurons-bundle", "version": 1,
                              "architecture": "progan" | "stylegan2", "kwargs": {...},
                              "resolution", "z_dim", "name", "source": {"file", "sha256"},
                              "defaults": {"truncation": 1.0, "noise": "buffers"}}
    generator.safetensors    the generator's state dict, original key names
    README.md                model card
    catalog/<layer>.json     optional, written by dissection
    stats/<layer>.safetensors, segmenter.safetensors + segmenter.json, encoder.*   optional

A bundle is read-only at run time: what the app computes for a visitor (a catalog, key
statistics) goes to the model's scratch folder (:meth:`Bundle.scratch`, under ``$PWN_CACHE_DIR``),
never into the bundle. Only the command line (``python -m core dissect`` / ``stats``) writes there.

Run time reads safetensors only, with ``load_state_dict(strict=True)``. Legacy pickled checkpoints
(gandissect ProGAN ``.pth``, rosinality StyleGAN2 ``.pt``) enter only through
:func:`read_checkpoint` / :func:`convert_checkpoint`, which use ``torch.load(weights_only=True)``.
Every problem with a file raises one :class:`BundleError` whose message names the file and the problem.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pickle
import re
import struct
import tempfile
import warnings
from pathlib import Path

import torch

from .generators import FAMILIES, Generator, build, detect_family, get_family

FORMAT = "painting-with-neurons-bundle"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "generator.safetensors"
CARD_FILE = "README.md"
DEFAULTS = {"truncation": 1.0, "noise": "buffers"}
_RESERVED = ("format", "version", "architecture", "kwargs", "resolution", "z_dim")
LEGACY_SUFFIXES = (".pth", ".pt", ".ckpt", ".pkl")
CACHE_ENV = "PWN_CACHE_DIR"     # where run-time results go; default ~/.cache/painting-with-neurons


class BundleError(ValueError):
    """A bundle folder or checkpoint that cannot be used. The message names the file and the problem."""


def _few(names, n: int = 5) -> str:
    names = sorted(names)
    head = ", ".join(names[:n])
    return head + (f", ... ({len(names)} in all)" if len(names) > n else "")


# --------------------------------------------------------------------------- the Bundle object
@dataclasses.dataclass
class Bundle:
    """A loaded bundle. ``generator`` is the shared read-only base (eval mode, no gradients): edits
    go on top of it, never into it. ``path`` is the folder (``None`` for a checkpoint converted in
    memory); optional files other modules add live under it."""
    path: Path | None
    config: dict
    generator: Generator

    @property
    def name(self) -> str:
        return self.config.get("name") or (self.path.name if self.path else "model")

    @property
    def architecture(self) -> str:
        return self.config["architecture"]

    @property
    def resolution(self) -> int:
        return self.generator.resolution

    @property
    def z_dim(self) -> int:
        return self.generator.z_dim

    @property
    def layers(self) -> list[str]:
        return list(self.generator.layers)

    @property
    def defaults(self) -> dict:
        return {**DEFAULTS, **self.config.get("defaults", {})}

    def file(self, relpath: str) -> Path:
        """Path of ``relpath`` inside the bundle folder (it may not exist)."""
        if self.path is None:
            raise BundleError(f"bundle {self.name!r} exists only in memory (converted from "
                              f"{self.config.get('source', {}).get('file', 'a checkpoint')}); "
                              "save it with save_bundle or `python -m core convert` first")
        return self.path / relpath

    def catalog_path(self, layer: str) -> Path:
        return self.file(f"catalog/{self.generator.check_layer(layer)}.json")

    def stats_path(self, layer: str) -> Path:
        return self.file(f"stats/{self.generator.check_layer(layer)}.safetensors")

    def has_catalog(self, layer: str) -> bool:
        return self.path is not None and self.catalog_path(layer).is_file()

    def has_stats(self, layer: str) -> bool:
        return self.path is not None and self.stats_path(layer).is_file()

    def scratch(self, relpath: str) -> Path:
        """Path of ``relpath`` in this model's scratch folder, outside the bundle (it may not
        exist): ``$PWN_CACHE_DIR/<name>-<hash>/``, by default under
        ``~/.cache/painting-with-neurons``. The hash is of the bundle folder and its weights file's
        size and time (of the source checkpoint's sha256 for a bundle in memory), so another
        model of the same name, or retrained weights, get a folder of their own."""
        if self.path is None:
            key = self.config.get("source", {}).get("sha256", "")
        else:
            weights = self.path / WEIGHTS_FILE
            st = weights.stat() if weights.is_file() else None
            key = f"{self.path.resolve()}|{st and (st.st_size, st.st_mtime_ns)}"
        folder = re.sub(r"[^A-Za-z0-9._-]+", "_", self.name)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
        return scratch_root() / f"{folder}-{digest}" / relpath


def scratch_root() -> Path:
    """Where run-time results go: ``$PWN_CACHE_DIR``, by default ``~/.cache/painting-with-neurons``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "painting-with-neurons").expanduser()


# --------------------------------------------------------------------------- checks shared by load and convert
def check_state_dict(generator: Generator, state_dict: dict, where) -> None:
    """Raise BundleError unless ``state_dict`` has exactly the generator's keys and shapes and
    only finite values."""
    expected = generator.state_dict()
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise BundleError(f"{where}: entries that are not tensors: {_few(not_tensors)}")
    missing = set(expected) - set(state_dict)
    extra = set(state_dict) - set(expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if extra:
            parts.append(f"unexpected keys {_few(extra)}")
        raise BundleError(f"{where}: weights do not match the {generator.family} architecture: "
                          + "; ".join(parts))
    wrong = [f"{k} is {tuple(v.shape)}, expected {tuple(expected[k].shape)}"
             for k, v in state_dict.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
        raise BundleError(f"{where}: wrong tensor shapes: {'; '.join(wrong[:3])}{more}")
    check_finite(state_dict, where)


def check_finite(state_dict: dict, where) -> None:
    """Raise BundleError if any floating tensor holds NaN or inf."""
    bad = [k for k, v in state_dict.items()
           if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())]
    if bad:
        raise BundleError(f"{where}: non-finite values (NaN or inf) in {_few(bad)}")


def _check_defaults(defaults, where) -> dict:
    if not isinstance(defaults, dict):
        raise BundleError(f"{where}: 'defaults' must be an object, got {type(defaults).__name__}")
    t = defaults.get("truncation", DEFAULTS["truncation"])
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise BundleError(f"{where}: defaults.truncation must be a number, got {t!r}")
    n = defaults.get("noise", DEFAULTS["noise"])
    if not (n in ("buffers", "zero") or (isinstance(n, int) and not isinstance(n, bool))):
        raise BundleError(f"{where}: defaults.noise must be 'buffers', 'zero' or an integer seed, "
                          f"got {n!r}")
    return defaults


def read_config(path) -> dict:
    """Read and validate ``<bundle>/config.json``."""
    cfg_path = Path(path) / CONFIG_FILE
    if not cfg_path.is_file():
        raise BundleError(f"{cfg_path}: missing; {path} is not a model bundle "
                          f"(a bundle holds {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{cfg_path}: malformed JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise BundleError(f"{cfg_path}: malformed config, expected a JSON object, "
                          f"got {type(cfg).__name__}")
    if cfg.get("format") != FORMAT:
        raise BundleError(f"{cfg_path}: malformed config, 'format' is {cfg.get('format')!r}, "
                          f"expected {FORMAT!r}")
    version = cfg.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BundleError(f"{cfg_path}: malformed config, 'version' must be a positive integer, "
                          f"got {version!r}")
    if version > VERSION:
        raise BundleError(f"{cfg_path}: bundle format version {version} is newer than this code "
                          f"reads (version {VERSION}); update Painting with Neurons")
    arch = cfg.get("architecture")
    if arch not in FAMILIES:
        raise BundleError(f"{cfg_path}: unknown architecture {arch!r}; known: {', '.join(FAMILIES)}")
    if not isinstance(cfg.get("kwargs"), dict):
        raise BundleError(f"{cfg_path}: malformed config, 'kwargs' must be an object")
    _check_defaults(cfg.get("defaults", {}), cfg_path)
    return cfg


def _build(cfg: dict, where) -> Generator:
    try:
        return build(cfg["architecture"], cfg["kwargs"])
    except ImportError as e:
        raise BundleError(f"{where}: the {cfg['architecture']} family is not available ({e})") from None
    except (TypeError, ValueError, KeyError, IndexError) as e:
        raise BundleError(f"{where}: kwargs {cfg['kwargs']} do not describe a "
                          f"{cfg['architecture']} generator ({e})") from None


# --------------------------------------------------------------------------- load
def load_bundle(path, device: str | torch.device = "cpu") -> Bundle:
    """Load a bundle folder: validate config.json, build the generator, read generator.safetensors
    (safetensors only) and ``load_state_dict(strict=True)``. Returns a :class:`Bundle` whose
    generator is in eval mode with ``requires_grad`` off."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: no such bundle folder")
    if not path.is_dir():
        hint = (" (a legacy checkpoint: convert it with `python -m core convert` or open it with "
                "core.load_model)") if path.suffix in LEGACY_SUFFIXES else ""
        raise BundleError(f"{path}: is a file, not a bundle folder{hint}")
    cfg = read_config(path)
    cfg_path = path / CONFIG_FILE
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise BundleError(f"{weights}: missing; the bundle has a config but no generator weights")
    g = _build(cfg, cfg_path)
    for key in ("resolution", "z_dim"):
        if key in cfg and cfg[key] != getattr(g, key):
            raise BundleError(f"{cfg_path}: '{key}' is {cfg[key]!r} but the kwargs give a "
                              f"{getattr(g, key)} generator")
    try:
        sd = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise BundleError(f"{weights}: not a readable safetensors file ({e})") from None
    check_state_dict(g, sd, weights)
    try:
        g.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # check_state_dict should have caught it; keep the one-error promise
        raise BundleError(f"{weights}: {str(e).splitlines()[0]}") from None
    return Bundle(path, cfg, _freeze(g).to(device))


def _freeze(g: Generator) -> Generator:
    g.eval()
    g.requires_grad_(False)
    return g


# --------------------------------------------------------------------------- save
def bundle_config(generator: Generator, name: str | None = None, source: dict | None = None,
                  extra_config: dict | None = None) -> dict:
    """The config.json dict for a generator (what save_bundle writes)."""
    cfg = {"format": FORMAT, "version": VERSION, "architecture": generator.family,
           "kwargs": generator.config(), "resolution": generator.resolution,
           "z_dim": generator.z_dim, "name": name or "model"}
    if source:
        cfg["source"] = dict(source)
    cfg["defaults"] = dict(DEFAULTS)
    for k, v in (extra_config or {}).items():
        if k in _RESERVED:
            raise BundleError(f"extra_config may not set {k!r} (it is derived from the generator)")
        if k == "defaults":
            cfg["defaults"] = {**cfg["defaults"], **_check_defaults(v, "extra_config")}
        else:
            cfg[k] = v
    try:
        json.dumps(cfg)
    except TypeError as e:
        raise BundleError(f"config for {cfg['name']!r} is not JSON-serializable ({e})") from None
    return cfg


def _tensors_for_saving(generator: Generator) -> dict[str, torch.Tensor]:
    out, seen = {}, set()
    for k, v in generator.state_dict().items():
        v = v.detach().to("cpu").contiguous()
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:          # safetensors refuses tensors that share storage
            v = v.clone()
        seen.add(v.untyped_storage().data_ptr())
        out[k] = v
    return out


def atomic_write(dest: Path, data: bytes | str) -> None:
    """Write ``dest`` via a temporary file in the same folder and a rename, so readers never see
    a half-written file."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix="." + dest.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def layer_table(generator: Generator) -> list[tuple[str, int, int]]:
    """``[(layer, channels, spatial size), ...]``: from ``layer_channels``/``layer_resolution``
    when the family defines both, else measured with one forward pass of one image."""
    if hasattr(generator, "layer_resolution"):
        return [(n, int(generator.layer_channels(n)), int(generator.layer_resolution(n)))
                for n in generator.layers]
    rows = []
    with torch.no_grad():
        z = generator.sample_z([0]).to(generator.device)
        state = generator.start(z, truncation=1.0, noise="zero")
        for name in generator.layers:
            state = generator.step(name, state)
            rows.append((name, int(state.x.shape[1]), int(state.x.shape[-1])))
    return rows


def model_card(cfg: dict, generator: Generator) -> str:
    """README.md text for a bundle (Hugging Face model card with YAML front matter)."""
    arch = cfg["architecture"]
    title = FAMILIES[arch].title if arch in FAMILIES else arch
    licence = cfg.get("license", "other")
    lines = ["---", f"license: {licence}", "library_name: painting-with-neurons",
             "pipeline_tag: unconditional-image-generation",
             "tags:", "- gan", "- interpretability", f"- {arch}", "---", "",
             f"# {cfg['name']}", "",
             f"A {title} generator packaged as a Painting with Neurons model bundle: "
             f"{cfg['resolution']}x{cfg['resolution']} images from a {cfg['z_dim']}-dimensional z.", "",
             "## Files", "",
             f"- `{CONFIG_FILE}`: architecture `{arch}`, constructor kwargs, defaults "
             f"(truncation {cfg['defaults']['truncation']}, noise `{cfg['defaults']['noise']}`)",
             f"- `{WEIGHTS_FILE}`: the generator state dict (original key names, safetensors)",
             "- optional: `catalog/<layer>.json` (unit labels), `stats/<layer>.safetensors`, "
             "`segmenter.*`, `encoder.*`", "",
             "## Layers", "", "| layer | channels | resolution |", "|---|---|---|"]
    try:
        for name, c, r in layer_table(generator):
            lines.append(f"| `{name}` | {c} | {r}x{r} |")
    except Exception as e:  # the card must never block saving
        lines.append(f"| (could not run the generator: {e}) | | |")
    lines += ["", "## Source", ""]
    src = cfg.get("source")
    if src:
        lines.append(f"Converted from `{src.get('file')}` (sha256 `{src.get('sha256')}`) with "
                     "`core.convert_checkpoint` (`python -m core convert`); weights and key names "
                     "are unchanged.")
    else:
        lines.append("Saved directly from a generator (no converted source file).")
    lines += ["", "## Licence", "",
              f"Licence field: `{licence}`. Converting a checkpoint does not change its licence: "
              "these weights carry the licence and terms of the original checkpoint and the data "
              "it was trained on. Check those before redistributing.", ""]
    return "\n".join(lines)


def save_bundle(generator: Generator, dest, name: str | None = None, source: dict | None = None,
                extra_config: dict | None = None, overwrite: bool = False) -> Path:
    """Write ``generator`` as a bundle folder at ``dest`` (config.json, generator.safetensors,
    README.md) and return the folder. Other files already in ``dest`` are left alone. Refuses to
    replace an existing bundle's config unless ``overwrite``."""
    from safetensors.torch import save as st_save

    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise BundleError(f"{dest}: exists and is not a folder")
    if (dest / CONFIG_FILE).exists() and not overwrite:
        raise BundleError(f"{dest}: already holds a bundle; pass overwrite=True (CLI: --overwrite) "
                          "to replace it")
    cfg = bundle_config(generator, name or dest.name, source, extra_config)
    tensors = _tensors_for_saving(generator)
    check_state_dict(generator, tensors, f"generator {cfg['name']!r}")
    dest.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt", "architecture": cfg["architecture"], "bundle_format": FORMAT}
    atomic_write(dest / WEIGHTS_FILE, st_save(tensors, metadata=meta))
    atomic_write(dest / CARD_FILE, model_card(cfg, generator).encode("utf-8"))
    atomic_write(dest / CONFIG_FILE, (json.dumps(cfg, indent=2) + "\n").encode("utf-8"))
    return dest


# --------------------------------------------------------------------------- legacy checkpoints
def copy_capped(src, dst, max_bytes: int, too_big, progress=None) -> int:
    """Copy the readable ``src`` into the writable ``dst`` in 1 MiB blocks; raise ``too_big()``
    as soon as more than ``max_bytes`` arrived (a download or an unzip never fills the disk);
    ``progress(done)`` after each block. Returns the bytes copied."""
    done = 0
    while block := src.read(1 << 20):
        done += len(block)
        if done > max_bytes:
            raise too_big()
        dst.write(block)
        if progress:
            progress(done)
    return done


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _torch_load(src: Path):
    """``torch.load(weights_only=True)`` with one clear error for each way it can fail."""
    try:
        with warnings.catch_warnings():     # torch's note about pickle protocols is noise here
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = re.search(r"Unsupported (global|class|operand)[: ]*([^\n]*?)(?: was not an allowed|\n|$)", msg)
        if m or "Weights only load failed" in msg:
            what = f" ({m.group(0).strip()})" if m else ""
            raise BundleError(
                f"{src}: refusing to load: the file contains code/objects, not just tensors{what}. "
                "Only plain state-dict checkpoints are read (torch.load weights_only=True); a "
                "truncated file can also look like this") from None
        raise BundleError(f"{src}: corrupt or truncated checkpoint ({msg.splitlines()[0] if msg else 'unpickling failed'})") from None
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError, OSError, AttributeError,
            ImportError, struct.error) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BundleError(f"{src}: corrupt or truncated checkpoint, or not a PyTorch file "
                          f"({detail[:200]})") from None
    except Exception as e:  # noqa: BLE001 - anything else torch.load throws on a damaged file
        raise BundleError(f"{src}: corrupt checkpoint ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None


def read_checkpoint(src, name: str | None = None, family: str | None = None) -> Bundle:
    """Read a legacy checkpoint into an in-memory :class:`Bundle` (``path=None``).

    ProGAN: a gandissect state dict, plain or ``{'state_dict': ...}``, new ``layerN`` or old
    ``features.N`` names. StyleGAN2: rosinality's ``{'g_ema': ..., 'latent_avg': ...}``. Read with
    ``torch.load(map_location='cpu', weights_only=True)`` only: files holding code are refused.
    ``family``: the family the file must be (a known model's), else any."""
    src = Path(src)
    if not src.exists():
        raise BundleError(f"{src}: no such checkpoint file")
    if src.is_dir():
        raise BundleError(f"{src}: is a folder, not a checkpoint file")
    digest = sha256_file(src)
    obj = _torch_load(src)
    expected, family = family, detect_family(obj, among=[family] if family else None)
    if family is None and expected:
        raise BundleError(f"{src}: not a {expected} checkpoint")
    if family is None:
        if isinstance(obj, dict):
            keys = [str(k) for k in obj]
            found = f"top-level keys: {_few(keys)}" if keys else "an empty dict"
        else:
            found = f"a {type(obj).__name__}"
        raise BundleError(f"{src}: neither a ProGAN (gandissect) nor a StyleGAN2 (rosinality) "
                          f"checkpoint; found {found}")
    try:
        g, sd = get_family(family).from_checkpoint(obj)
    except ValueError as e:
        raise BundleError(f"{src}: {e}") from None
    check_state_dict(g, sd, src)
    g.load_state_dict(sd, strict=True)
    cfg = bundle_config(g, name or src.stem, {"file": src.name, "sha256": digest})
    return Bundle(None, cfg, _freeze(g))


def convert_checkpoint(src, dest, name: str | None = None, overwrite: bool = False) -> Path:
    """Convert a legacy ``.pth``/``.pt`` checkpoint into a bundle folder at ``dest``; returns it.
    The config records the source file name and its sha256."""
    b = read_checkpoint(src, name=name or Path(dest).name)
    return save_bundle(b.generator, dest, name=b.config["name"], source=b.config["source"],
                       overwrite=overwrite)


__all__ = ["Bundle", "BundleError", "load_bundle", "save_bundle", "read_checkpoint",
           "convert_checkpoint", "check_state_dict", "read_config", "bundle_config", "model_card",
           "layer_table", "sha256_file", "copy_capped", "scratch_root", "detect_family", "FORMAT", "VERSION", "CACHE_ENV"]
