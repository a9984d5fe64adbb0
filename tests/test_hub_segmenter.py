"""core.hub_segmenter: a tiny random SegFormer saved in the exact Hub layout (transformers config
+ safetensors) in a temporary HF cache, the Hub switched off; the CLI dissects with it."""
from __future__ import annotations

import json

import pytest
import torch

import core
from core import hub_segmenter
from core.bundle import save_bundle
from core.segmenter import SegmenterError
from tests.conftest import make_progan
from tests.test_hub import cache, folder_files, populate  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow          # importing transformers takes seconds

LABELS = {0: "wall", 1: "building, edifice", 2: "sky", 3: "tree", 4: "palm, palm tree",
          5: "windowpane, window"}


def tiny_segformer(folder, weights="safetensors"):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation
    cfg = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                          patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1],
                          mlp_ratios=[2, 2], decoder_hidden_size=16, id2label=LABELS,
                          label2id={v: k for k, v in LABELS.items()})
    torch.manual_seed(0)
    net = SegformerForSemanticSegmentation(cfg).eval()
    net.save_pretrained(folder)
    if weights == "bin":
        (folder / "model.safetensors").unlink()
        torch.save(net.state_dict(), folder / "pytorch_model.bin")
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    return net


class Smuggled:
    """Any class in a pickle: torch.load(weights_only=True) refuses to build it."""


def test_concepts_merge_synonyms():
    names, groups = hub_segmenter.concept_groups(LABELS)
    assert names == ["wall", "building", "sky", "tree", "window"]
    assert groups == [[0], [1], [2], [3, 4], [5]]


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_loads_offline_and_segments_like_the_model(cache, tmp_path, weights):
    net = tiny_segformer(tmp_path / "seg", weights)
    populate(cache, "org/seg", folder_files(tmp_path / "seg"))
    seg = hub_segmenter.load_hub_segmenter("org/seg")
    assert seg.concepts == ["wall", "building", "sky", "tree", "window"] and len(seg.palette) == 5
    assert seg.id == "org/seg" and seg.concept_index("tree") == 3
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    labels = seg.segment(x)
    assert labels.shape == (2, 32, 32) and labels.max() < 5
    with torch.no_grad():
        raw = net(pixel_values=((x + 1) / 2 - 0.5) / 0.25).logits
        raw = torch.nn.functional.interpolate(raw, size=(32, 32), mode="bilinear", align_corners=False)
    want = torch.stack([raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3:5].amax(1), raw[:, 5]], 1)
    assert torch.allclose(seg.logits(x), want, atol=1e-5)


def test_bad_segmenter_repos(cache, tmp_path):
    with pytest.raises(core.hub.HubError, match="org/none is not in the local Hugging Face cache"):
        hub_segmenter.load_hub_segmenter("org/none")
    (tmp_path / "evil").mkdir()
    tiny_segformer(tmp_path / "evil")
    (tmp_path / "evil" / "model.safetensors").unlink()
    torch.save({"x": Smuggled()}, tmp_path / "evil" / "pytorch_model.bin")
    populate(cache, "org/evil", folder_files(tmp_path / "evil"))
    with pytest.raises(SegmenterError, match="refusing pytorch_model.bin"):
        hub_segmenter.load_hub_segmenter("org/evil")
    (tmp_path / "nomodel").mkdir()
    (tmp_path / "nomodel" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    populate(cache, "org/nomodel", folder_files(tmp_path / "nomodel"))
    with pytest.raises(SegmenterError, match="org/nomodel"):
        hub_segmenter.load_hub_segmenter("org/nomodel")


def test_cli_dissects_with_the_hub_segmenter(cache, tmp_path, capsys):
    from core.__main__ import main
    tiny_segformer(tmp_path / "seg")
    populate(cache, "org/seg", folder_files(tmp_path / "seg"))
    bundle = save_bundle(make_progan(), tmp_path / "tiny", name="tiny")
    assert main(["dissect", str(bundle), "--layer", "layer4", "--segmenter", "org/seg",
                 "--samples", "8", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    written = core.load_model(bundle).bundle.scratch("catalog-org--seg") / "layer4.json"
    assert f"wrote {written}" in out and written.is_file()
    cat = json.loads(written.read_text())
    assert set(cat["concepts"]) <= {"wall", "building", "sky", "tree", "window"}
    assert not (bundle / "catalog").exists()            # the bundle folder is left alone


def test_the_app_does_not_import_transformers():
    import subprocess
    import sys
    code = ("import sys; import core, core.hub_segmenter, demos, demos.models, demos.dissect; "
            "assert 'transformers' not in sys.modules, 'transformers imported at start-up'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=core.paths.REPO_ROOT)


def test_cli_pushes_catalogs_that_a_model_then_finds(cache, tmp_path, capsys, monkeypatch):
    from core.__main__ import main
    from tests.test_hub import FakeApi
    import huggingface_hub as hf
    FakeApi.calls = []
    monkeypatch.setattr(hf, "HfApi", FakeApi)
    tiny_segformer(tmp_path / "seg")
    populate(cache, "org/seg", folder_files(tmp_path / "seg"))
    bundle = save_bundle(make_progan(), tmp_path / "tiny", name="tiny")
    out = tmp_path / "cats"
    assert main(["dissect", str(bundle), "--layer", "layer4", "--segmenter", "org/seg", "--samples",
                 "4", "--out", str(out), "--push", "me/tiny-catalogs", "--token", "hf_me"]) == 0
    (_, rid, kw, token), (_, _, ckw, ops) = FakeApi.calls
    assert rid == "me/tiny-catalogs" and kw["private"] is True and token == "hf_me"
    assert sorted(p for p, _ in ops) == ["README.md", "catalog/layer4.json"]
    # a model naming that repo as its catalog_repo finds the catalog (here: from the HF cache)
    populate(cache, "me/tiny-catalogs", {"catalog/layer4.json": (out / "layer4.json").read_bytes()})
    cfg = json.loads((bundle / "config.json").read_text())
    (bundle / "config.json").write_text(json.dumps({**cfg, "catalog_repo": "me/tiny-catalogs"}))
    from demos.context import catalog_path
    found = catalog_path(core.load_model(bundle), "layer4")
    assert found.read_bytes() == (out / "layer4.json").read_bytes() and "me--tiny-catalogs" in str(found)
