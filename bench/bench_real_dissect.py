"""Dissecting a real-size model with the real-scene segmenter on CPU: a 256 px Progressive GAN
(the LSUN models' architecture, random weights: the time does not depend on them) and
SegFormer-b0 ADE20k (the Hub weights when cached, else the same architecture with random
weights), 200 samples of layer4, as the Dissect tab does for a model from the picker."""
import time

import torch

from bench import row
from core.bundle import Bundle, bundle_config
from core.dissect import dissect
from core.generators.progan import ProGANGenerator
from core.model import Model

PROGAN_256 = [512, 512, 512, 512, 512, 256, 128, 64, 32]    # z_dim, then channels 4..256 px
B0 = dict(num_encoder_blocks=4, depths=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1], hidden_sizes=[32, 64, 160, 256],
          patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2], num_attention_heads=[1, 2, 5, 8],
          mlp_ratios=[4, 4, 4, 4], decoder_hidden_size=256)


def segmenter():
    """(segmenter, where its weights came from)."""
    from core.hub_segmenter import DEFAULT_SEGMENTER, load_hub_segmenter
    try:
        return load_hub_segmenter(DEFAULT_SEGMENTER, allow_download=False), "Hub weights"
    except Exception:  # noqa: BLE001 - not cached here: the same architecture, random weights
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        from core.hub_segmenter import ConceptHead, concept_groups, palette
        from core.segmenter import Segmenter
        labels = {i: f"class{i}" for i in range(150)}
        torch.manual_seed(0)
        net = SegformerForSemanticSegmentation(SegformerConfig(id2label=labels, **B0)).eval()
        concepts, groups = concept_groups(labels)
        return Segmenter(ConceptHead(net, groups), concepts, palette(len(concepts))), "random weights"


def run(quick: bool = False) -> list[dict]:
    torch.manual_seed(0)
    g = ProGANGenerator(PROGAN_256).eval().requires_grad_(False)
    model = Model(Bundle(None, bundle_config(g, "progan-256-random"), g))
    seg, weights = segmenter()
    n = 20 if quick else 200
    t = time.perf_counter()
    cat = dissect(model, seg, "layer4", range(n), batch_size=10)
    total = time.perf_counter() - t
    tm = cat["timing"]
    return [row("real_dissect", f"ProGAN 256 px layer4 x {n}, SegFormer-b0 ({weights})", total, "s",
                "CPU; the Dissect tab's default for a real model"),
            row("real_dissect", f"  generate / segment / stats ({n})",
                f"{tm['generate_s']:.1f} / {tm['segment_s']:.1f} / {tm['stats_s']:.1f}", "s")]
