"""Photos: safe loading, inversion, adaptation, compositing, encoder, evaluation (tiny models)."""
from __future__ import annotations

import io
import json
import resource
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_progan
from core.edits import EditStack, UnitEdit, WeightEdit
from core.images import to_uint8
from core.settings import model_settings
from core.photo import (MAX_BYTES, AdaptResult, InversionResult, PhotoError, adapt, composite,
                        default_fine_layers, finish, invert, load_photo, open_photo,
                        psnr)


# ------------------------------------------------------------------------------------ helpers
def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def forged_png(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header claims width x height RGB pixels (valid CRCs)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(b"\0" * 16)) + _chunk(b"IEND", b""))


def quadrants(w=32, h=32) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:h // 2, :w // 2] = (255, 0, 0)
    a[:h // 2, w // 2:] = (0, 255, 0)
    a[h // 2:, :w // 2] = (0, 0, 255)
    a[h // 2:, w // 2:] = (255, 255, 255)
    return Image.fromarray(a)


def u8(x) -> np.ndarray:
    return to_uint8(x[0])


class TinySeg:
    """A stand-in segmenter: a random ToySegNet (width 4) with concepts sky/tree."""

    def __init__(self, seed=0):
        from core.segmenter import Segmenter, ToySegNet
        torch.manual_seed(seed)
        self.seg = Segmenter(ToySegNet(2, width=4), ["sky", "tree"])
        self.net, self.concepts = self.seg.net, self.seg.concepts

    def segment(self, images):
        return self.seg.segment(images)

    def concept_index(self, c):
        return self.seg.concept_index(c)


@pytest.fixture(scope="module")
def g():
    return make_progan()


@pytest.fixture(scope="module")
def target(g):
    with torch.no_grad():
        return g.generate(torch.randn(1, g.z_dim, generator=torch.Generator().manual_seed(7))).clamp(-1, 1)


@pytest.fixture(scope="module")
def inverted(g, target):
    return finish(invert(g, target, steps=15, starts=8))


# ------------------------------------------------------------------------------------ loading
def test_load_photo_exact_and_round_trip(tmp_path):
    img = Image.fromarray(np.random.RandomState(0).randint(0, 256, (24, 24, 3), np.uint8))
    for source in (png_bytes(img), img, np.asarray(img), io.BytesIO(png_bytes(img))):
        x = load_photo(source, 24)
        assert x.shape == (1, 3, 24, 24) and x.dtype == torch.float32
        assert float(x.min()) >= -1 and float(x.max()) <= 1
        assert np.array_equal(u8(x), np.asarray(img))          # to_uint8 gives the upload back
    path = tmp_path / "p.png"
    path.write_bytes(png_bytes(img))
    assert np.array_equal(u8(load_photo(path, 24)), np.asarray(img))
    assert np.array_equal(u8(load_photo(str(path), 24)), np.asarray(img))


def test_centre_crop_and_resize():
    a = np.zeros((20, 60, 3), np.uint8)
    a[:, :20] = (255, 0, 0)
    a[:, 20:40] = (0, 255, 0)
    a[:, 40:] = (0, 0, 255)
    out = u8(load_photo(png_bytes(Image.fromarray(a)), 16))
    assert out.shape == (16, 16, 3)
    assert (np.abs(out.astype(int) - (0, 255, 0)).max(axis=-1) <= 2).all()   # only the middle


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_rotation_honoured(fmt):
    img = quadrants(64, 32)                       # landscape as stored
    exif = Image.Exif()
    exif[0x0112] = 6                              # "rotate 90 CW to display"
    buf = io.BytesIO()
    img.save(buf, format=fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    up = open_photo(buf.getvalue())
    assert up.size == (32, 64)                    # portrait after rotation
    a = np.asarray(up).astype(int)
    # rotating 90 CW puts the stored bottom-left (blue) at the top-left, top-left (red) top-right
    assert np.abs(a[4, 4] - (0, 0, 255)).max() < 40
    assert np.abs(a[4, 28] - (255, 0, 0)).max() < 40
    assert np.abs(a[60, 4] - (255, 255, 255)).max() < 40
    x = u8(load_photo(buf.getvalue(), 16))        # centre square of the upright image
    assert np.array_equal(u8(load_photo(up, 16)), x)          # not rotated twice
    assert np.abs(x[2, 2].astype(int) - (0, 0, 255)).max() < 40


def _encode(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_modes_convert_to_rgb():
    grey = Image.new("L", (20, 20), 100)
    assert (u8(load_photo(_encode(grey), 16)) == 100).all()
    bw = Image.new("1", (20, 20), 1)
    assert (u8(load_photo(_encode(bw), 16)) == 255).all()
    la = Image.new("LA", (20, 20), (0, 0))                        # fully transparent black
    assert (u8(load_photo(_encode(la), 16)) == 255).all()          # -> white
    rgba = Image.new("RGBA", (20, 20), (0, 0, 0, 128))             # half-transparent black
    assert np.abs(u8(load_photo(_encode(rgba), 16)).astype(int) - 127).max() <= 1
    p = Image.new("P", (20, 20), 3)
    p.putpalette([0, 0, 0, 10, 20, 30, 40, 50, 60, 200, 100, 50] + [0] * 744)
    assert (u8(load_photo(_encode(p), 16)) == (200, 100, 50)).all()
    pt = p.copy()
    pt.info["transparency"] = 3                                    # palette entry 3 transparent
    assert (u8(load_photo(_encode(pt, transparency=3), 16)) == 255).all()
    cmyk = Image.new("CMYK", (20, 20), (0, 255, 255, 0))            # pure red ink
    assert (u8(load_photo(_encode(cmyk, "TIFF"), 16)) == (255, 0, 0)).all()
    i16 = Image.fromarray(np.full((20, 20), 32896, np.uint16))     # 16-bit grey ~ 50%
    assert i16.mode.startswith("I;16")
    out = u8(load_photo(_encode(i16), 16))
    assert np.abs(out.astype(int) - 128).max() <= 1                 # scaled, not clipped to 255
    i32 = Image.fromarray(np.full((20, 20), 65535, np.int32), "I")
    assert (u8(load_photo(i32, 16)) == 255).all()


def test_first_frame_of_animation():
    frames = [Image.new("RGB", (20, 20), (255, 0, 0)), Image.new("RGB", (20, 20), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = u8(load_photo(buf.getvalue(), 16)).astype(int)
    assert np.abs(out - (255, 0, 0)).max() <= 8


@pytest.mark.parametrize("data, words", [
    (b"hello, not an image", "not an image"),
    (b"", "empty"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not an image"),
])
def test_not_an_image(data, words):
    with pytest.raises(PhotoError, match=words):
        load_photo(data, 16)


def test_truncated_files():
    img = Image.fromarray(np.random.RandomState(1).randint(0, 256, (64, 64, 3), np.uint8))
    for fmt in ("PNG", "JPEG"):
        data = _encode(img, fmt)
        with pytest.raises(PhotoError, match="truncated|damaged"):
            load_photo(data[:len(data) // 2], 16)


def test_decompression_bomb_refused_quickly():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(PhotoError, match="too large|megapixels"):
        load_photo(forged_png(30000, 30000), 64)             # 900 MP: Pillow's bomb error
    with pytest.raises(PhotoError, match="megapixels"):
        load_photo(forged_png(8000, 6000), 64)               # 48 MP: over our 40 MP limit
    assert time.perf_counter() - t0 < 1.0
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100                                     # nothing was decoded


def test_tiny_and_oversized(tmp_path):
    with pytest.raises(PhotoError, match="at least 16"):
        load_photo(_encode(Image.new("RGB", (8, 40))), 16)
    with pytest.raises(PhotoError, match="MB"):
        load_photo(b"\0" * (MAX_BYTES + 1), 16)
    big = tmp_path / "big.png"
    with open(big, "wb") as f:                               # sparse: no real 10 MB written
        f.truncate(MAX_BYTES + 1)
    with pytest.raises(PhotoError, match="MB"):
        load_photo(big, 16)
    with pytest.raises(PhotoError, match="no such file"):
        load_photo(tmp_path / "missing.png", 16)
    assert issubclass(PhotoError, ValueError)


# ------------------------------------------------------------------------------------ inversion
def test_invert_lowers_loss_and_previews(g, target):
    calls = []
    recs = list(invert(g, target, steps=12, preview_every=4, starts=4, segmenter=TinySeg(),
                       progress=lambda f, desc="": calls.append(f)))
    assert [r["step"] for r in recs] == [0, 4, 8, 12, 12]
    assert all(r["preview"] is not None and r["preview"].shape == (1, 3, 16, 16) for r in recs)
    assert recs[-1]["done"] and not any(r["done"] for r in recs[:-1])
    res = recs[-1]["result"]
    assert isinstance(res, InversionResult) and not res.stopped and res.steps == 12
    assert recs[-1]["loss"] < recs[0]["loss"] and recs[-1]["psnr"] > recs[0]["psnr"]
    assert calls[0] == 0 and calls[-1] == 1
    # the result renders through Generator.run(edit=...) and matches its image
    assert res.residual.shape == (1,) + tuple(g.run(g.start(res.z), stop=res.layer).x.shape[1:])
    with torch.no_grad():
        img = g.finish(g.run(g.start(res.z), edit=EditStack((res.edit(),)).feature_edit()))
    assert torch.allclose(img.clamp(-1, 1), res.image, atol=1e-5)
    assert torch.allclose(res.render(g).clamp(-1, 1), res.image, atol=1e-5)


def test_invert_stop_returns_best_so_far(g, target):
    n = {"calls": 0}

    def stop():
        n["calls"] += 1
        return n["calls"] > 3

    recs = list(invert(g, target, steps=50, preview_every=100, starts=2, stop=stop))
    res = recs[-1]["result"]
    assert recs[-1]["done"] and recs[-1]["stopped"] and res.stopped
    assert res.steps == 3 and len(recs) == 2
    assert res.loss <= recs[0]["loss"]


def test_invert_with_encoder_and_photo_path(g, tmp_path):
    from core.encoder import build_encoder
    torch.manual_seed(0)
    enc = build_encoder(g, "layer2", width=4, max_width=8)
    path = tmp_path / "q.png"
    path.write_bytes(png_bytes(quadrants()))
    res = finish(invert(g, path, steps=2, encoder=enc))
    assert res.layer == "layer2" and res.start.startswith("encoder")
    with pytest.raises(ValueError, match="encoder predicts"):
        finish(invert(g, path, steps=1, encoder=enc, layer="layer3"))


# ------------------------------------------------------------------------------------ adaptation
def _weights(g):
    return {k: v.detach().clone().numpy().tobytes() for k, v in g.state_dict().items()}


def test_adapt_raises_psnr_and_leaves_base_untouched(g, target, inverted):
    before = _weights(g)
    assert default_fine_layers(g) == ["layer5", "layer6"]   # paint layer4 (8 px): the 16 px layers
    recs = list(adapt(g, inverted, target, steps=12, lr=0.03, preview_every=6, segmenter=TinySeg()))
    res = recs[-1]["result"]
    assert isinstance(res, AdaptResult) and [r["step"] for r in recs] == [0, 6, 12, 12]
    assert res.psnr > res.psnr_before + 0.1
    assert abs(res.psnr_before - inverted.psnr) < 1e-3
    assert _weights(g) == before                                 # byte-identical base
    assert all(p.grad is None for p in g.parameters())
    assert all(isinstance(e, WeightEdit) and e.dense is not None for e in res.edits)
    assert [e.layer for e in res.edits] == ["layer5", "layer6"]
    for e in res.edits:
        e.validate(g)
    img = inverted.render(g, res.stack())                       # the per-session edit works
    assert torch.allclose(img.clamp(-1, 1), res.image, atol=1e-5)
    assert psnr(img, target) == pytest.approx(res.psnr, abs=1e-3)


def test_adapt_stop_and_layer_checks(g, target, inverted):
    recs = list(adapt(g, inverted, target, steps=20, stop=lambda: True))
    assert recs[-1]["stopped"] and recs[-1]["result"].steps == 0
    with pytest.raises(ValueError, match="after the inversion layer"):
        finish(adapt(g, inverted, target, steps=1, fine_layers=["layer1"]))


def test_paint_on_inversion_composes(g, inverted):
    layer = inverted.layer
    stroke = UnitEdit(layer, [0, 1], [3.0, 3.0], torch.ones(2, 2))
    a = inverted.render(g)
    b = inverted.render(g, EditStack((stroke,)))
    assert not torch.allclose(a, b)


# ------------------------------------------------------------------------------------ compositing
def test_composite_keeps_untouched_pixels_exact():
    rng = np.random.RandomState(3)
    photo = Image.fromarray(rng.randint(0, 256, (32, 32, 3), np.uint8))
    before = torch.rand(1, 3, 32, 32) * 2 - 1
    after = before.clone()
    after[:, :, 4:8, 20:26] = 0.9
    out, mask = composite(photo, before, after, feather=2, dilate=1, return_mask=True)
    assert isinstance(out, Image.Image)
    o, p = np.asarray(out), np.asarray(photo)
    far = np.ones((32, 32), bool)
    far[0:8 + 5, 20 - 5:26 + 5] = False                         # dilate + 2 * feather = 5
    assert np.array_equal(o[far], p[far])
    assert float(mask.min()) == 0.0 and (mask.numpy()[4:8, 20:26] == 1).all()
    assert (np.abs(o[4:8, 20:26].astype(int) - round((0.9 + 1) * 127.5)) <= 1).all()
    # tensors in, tensor out; bigger photo than the renders (upsampled mask)
    xp = load_photo(png_bytes(photo.resize((64, 64))), 64)
    outt = composite(xp, before, after)
    assert torch.is_tensor(outt) and outt.shape == (1, 3, 64, 64)
    far64 = np.ones((64, 64), bool)
    far64[0:8 * 2 + 2 * 5 + 2, 20 * 2 - 2 * 5 - 2:] = False     # (dilate + 2 feather) x 2, +2
    assert (np.asarray(composite(photo, before, after, return_mask=True)[1]) > 0).sum() < 32 * 32 / 2
    assert torch.equal(outt[..., torch.from_numpy(far64)], xp[..., torch.from_numpy(far64)])
    assert np.array_equal(u8(outt)[far64], u8(xp)[far64])


# ------------------------------------------------------------------------------------ encoder
def test_encoder_training_script_and_loading(progan_bundle, tmp_path):
    import core
    from core.encoder import ENCODER_CONFIG, load_encoder
    from training.encoder import main
    assert load_encoder(progan_bundle) is None
    main(["--bundle", str(progan_bundle), "--steps", "2", "--batch", "4", "--pixel-batch", "2",
          "--eval-images", "4", "--width", "4"])
    cfg = json.loads((progan_bundle / ENCODER_CONFIG).read_text())
    assert cfg["training"]["steps"] == 2 and cfg["layer"] == "layer4"
    assert set(cfg["metrics"]) >= {"z_cosine", "psnr_from_features"}
    model = core.load_model(progan_bundle)
    enc = load_encoder(model)
    z, f = enc(torch.zeros(1, 3, 16, 16))
    assert z.shape == (1, 8) and f.shape == (1, 8, 8, 8)
    res = finish(invert(model, torch.zeros(1, 3, 16, 16), steps=1, encoder=enc))
    assert res.start.startswith("encoder")
    cfg["generator_sha256"] = "0" * 64                           # stale: trained for other weights
    (progan_bundle / ENCODER_CONFIG).write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="other generator weights"):
        assert load_encoder(progan_bundle) is None


# ------------------------------------------------------------------------------------ evaluation
def test_evaluate_photos(progan_bundle, tmp_path):
    import core
    from core.eval.photo import evaluate_photos
    model = core.load_model(progan_bundle)
    layer = model_settings(model).paint_layer
    catalog = {"layer": layer, "concepts": {"tree": [{"unit": 0, "iou": 0.3}, {"unit": 1, "iou": 0.2}]},
               "units": [{"unit": u, "quantile_99": 4.0} for u in range(8)]}
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(quadrants()))
    (folder / "b.txt").write_text("ignored")
    (folder / "c.png").write_bytes(b"broken")
    out = tmp_path / "eval.json"
    res = evaluate_photos(model, TinySeg(), folder, steps=2, adapt_steps=2, catalog=catalog,
                          reference_images=2, reference_start=0, out=out)
    assert [r["name"] for r in res["rows"]] == ["a", "c"]
    row = res["rows"][0]
    assert {"psnr_inversion", "psnr_adapted", "seconds", "editability"} <= set(row)
    assert row["start"].startswith("random") and row["seconds"] > 0
    assert "error" in res["rows"][1]
    assert res["median"]["psnr_inversion"] == row["psnr_inversion"]
    assert json.loads(out.read_text())["median"] == res["median"]


def test_eval_cli_registered():
    import argparse
    from core.eval.photo import add_eval_parser
    p = argparse.ArgumentParser()
    add_eval_parser(p.add_subparsers())
    args = p.parse_args(["photo", "default", "dir", "--out", "x.json"])
    assert args.dir == "dir" and args.out == "x.json" and callable(args.run)


def test_adaptation_lr_warms_up_then_decays():
    from core.photo.fit import _lr_at
    assert _lr_at(0.05, 0, 300, warmup=30) == pytest.approx(0.05 / 30, rel=0.01)
    assert _lr_at(0.05, 29, 300, warmup=30) == pytest.approx(_lr_at(0.05, 29, 300), rel=1e-9)
    assert _lr_at(0.05, 0, 300) == pytest.approx(0.05)                     # no warm-up: full lr
    assert _lr_at(0.05, 300, 300) == pytest.approx(0.005)                  # decays to lr/10


@pytest.mark.slow
def test_photo_benchmark_runs_on_the_default_model():
    from bench.bench_photo import run
    rows = {r["metric"]: r for r in run(quick=True)}
    assert set(rows) == {"PSNR after inversion", "PSNR after adaptation", "seconds per photo",
                         "editability"}
    assert rows["PSNR after adaptation"]["value"] >= rows["PSNR after inversion"]["value"] > 15
