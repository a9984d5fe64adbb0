"""A real-scene segmenter from the Hub: an ADE20k semantic segmentation model through
``transformers`` (SegFormer, UPerNet, ...), behind the same interface as the bundles' own
segmenters (:class:`core.segmenter.Segmenter`: ``concepts``, ``segment``, ``logits``, ``net``).

::

    seg = load_hub_segmenter("nvidia/segformer-b0-finetuned-ade-512-512")
    catalog = dissect(model, seg, "layer8", range(200))

Its classes become concept names: the first name of each ADE20k label ("building, edifice" ->
"building"), a few merged where a GAN's pictures do not tell them apart (:data:`SAME_CONCEPT`:
windowpane -> window, palm -> tree, ...); a concept's score is the highest of its classes'. Only
``config.json``, ``preprocessor_config.json`` and the weights are fetched; weights in
``*.safetensors`` are preferred, a ``pytorch_model.bin`` is opened with
``torch.load(weights_only=True)``. ``transformers`` is imported here only, when a segmenter is
loaded: the app's start-up does not pay for it.
"""
from __future__ import annotations

import colorsys
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .hub import HubError, fetch_files
from .segmenter import Segmenter, SegmenterError

DEFAULT_SEGMENTER = "nvidia/segformer-b0-finetuned-ade-512-512"   # 15 MB, fast enough on a CPU
PATTERNS = ["config.json", "preprocessor_config.json", "*.safetensors", "pytorch_model.bin"]
SAME_CONCEPT = {"windowpane": "window", "palm": "tree", "earth": "ground", "land": "ground",
                "skyscraper": "building", "house": "building", "hovel": "building",
                "stairway": "stairs", "step": "stairs", "flower": "plant"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LABEL_SIZE = 128          # labels of a 256 px image: 128 x 128 (dissection cost grows with it)


def concept_groups(id2label: dict) -> tuple[list[str], list[list[int]]]:
    """(concept names, the class indices of each) from a transformers ``id2label``."""
    names, groups = [], []
    for i in sorted(int(k) for k in id2label):
        name = str(id2label[i] if i in id2label else id2label[str(i)]).split(",")[0].strip().lower()
        name = SAME_CONCEPT.get(name, name)
        if name not in names:
            names.append(name)
            groups.append([])
        groups[names.index(name)].append(i)
    return names, groups


def palette(n: int) -> list[list[int]]:
    """``n`` distinct colours (golden-ratio hues), the same for every run."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * (i % 3 == 2))
        out.append([round(255 * r), round(255 * g), round(255 * b)])
    return out


class ConceptHead(nn.Module):
    """[N,3,H,W] images in [-1,1] -> [N,K,h,w] concept scores from a semantic segmentation
    model: normalised as it was trained, optionally resized to ``input_size`` first, class scores
    upsampled to the image size, at most ``label_size`` (SegFormer's own scores are at a quarter
    of its input: finer labels would add no detail, only dissection time), and merged into
    concepts (max over each concept's classes)."""

    def __init__(self, model: nn.Module, groups: list[list[int]], mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, input_size: int | None = None, label_size: int = LABEL_SIZE):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.groups = groups
        self.single = all(len(g) == 1 for g in groups)
        self.register_buffer("order", torch.tensor([g[0] for g in groups]), persistent=False)
        self.input_size = input_size
        self.label_size = int(label_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = (x.float() + 1) / 2
        if self.input_size and (h, w) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False)
        logits = self.model(pixel_values=(x - self.mean) / self.std).logits
        size = (min(h, self.label_size), min(w, self.label_size))
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if self.single:
            return logits[:, self.order]
        return torch.stack([logits[:, g].amax(1) for g in self.groups], 1)


def _weights(folder: Path, where: str) -> dict | None:
    """The state dict of a weights-only ``pytorch_model.bin``; None when safetensors are there."""
    if any(folder.glob("*.safetensors")):
        return None
    bin_file = folder / "pytorch_model.bin"
    if not bin_file.is_file():
        raise SegmenterError(f"{where}: no model.safetensors or pytorch_model.bin in the repo")
    try:
        return torch.load(bin_file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a pickle with code in it, or a damaged file
        raise SegmenterError(f"{where}: refusing pytorch_model.bin: it holds more than tensors, or is "
                             f"damaged ({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})") from None


def catalog_folder_name(segmenter_id: str) -> str:
    """The scratch folder for catalogs made with a Hub segmenter: one per segmenter."""
    return "catalog-" + segmenter_id.replace("/", "--").replace("@", "-")


def load_hub_segmenter(source: str = DEFAULT_SEGMENTER, *, input_size: int | None = None,
                       cache_dir=None, allow_download: bool = True, token=None,
                       device="cpu") -> Segmenter:
    """The Hub semantic segmentation model ``org/name[@revision]`` as a :class:`Segmenter`.
    ``input_size`` resizes images before segmenting (None: as they are). Raises HubError (the
    repo) or SegmenterError (the files)."""
    folder = fetch_files(source, PATTERNS, cache_dir=cache_dir, allow_download=allow_download,
                         token=token)
    try:
        from transformers import AutoConfig, AutoModelForSemanticSegmentation
    except ImportError:
        raise SegmenterError("a Hub segmenter needs the transformers package (pip install "
                             "transformers)") from None
    try:
        config = AutoConfig.from_pretrained(folder)
        state = _weights(folder, source)
        if state is None:
            net = AutoModelForSemanticSegmentation.from_pretrained(folder, use_safetensors=True)
        else:
            net = AutoModelForSemanticSegmentation.from_config(config)
            missing, unexpected = net.load_state_dict(state, strict=False)
            if missing:
                raise SegmenterError(f"{source}: pytorch_model.bin lacks {len(missing)} weights "
                                     f"(first: {missing[0]})")
    except (OSError, ValueError, KeyError) as e:
        if isinstance(e, (SegmenterError, HubError)):
            raise
        raise SegmenterError(f"{source}: not a semantic segmentation model transformers can open "
                             f"({str(e).splitlines()[0][:200]})") from None
    prep = {}
    if (folder / "preprocessor_config.json").is_file():
        prep = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    concepts, groups = concept_groups(config.id2label)
    head = ConceptHead(net.eval(), groups, prep.get("image_mean", IMAGENET_MEAN),
                       prep.get("image_std", IMAGENET_STD), input_size).to(device)
    return Segmenter(head, concepts, palette(len(concepts)),
                     {"id": source, "architecture": "hub", "revision": folder.name,
                      "input_size": input_size, "concepts": concepts})


__all__ = ["load_hub_segmenter", "catalog_folder_name", "concept_groups", "ConceptHead", "DEFAULT_SEGMENTER", "SAME_CONCEPT"]
