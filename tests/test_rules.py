"""core.rules: the original rule-file format (round trip, real data URLs, every bad input) and
apply_rule on a tiny ProGAN."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from conftest import make_progan
from core import rewrite as rw
from core import rules
from core.edits import WeightEdit


def assert_close(a, b, atol=1e-5, rtol=1.3e-6):
    """torch.allclose with a useful message (torch.testing.assert_close imports torch.distributed,
    seconds on a loaded machine)."""
    a = torch.as_tensor(a).detach()
    b = torch.as_tensor(b).detach().to(a.dtype)
    assert a.shape == b.shape, f"shapes {tuple(a.shape)} != {tuple(b.shape)}"
    err = float((a - b).abs().max()) if a.numel() else 0.0
    assert torch.allclose(a, b, atol=atol, rtol=rtol), f"max abs diff {err:g}"


def quantised_mask(seed, size=256):
    rng = np.random.RandomState(seed)
    m = np.zeros((size, size), np.float32)
    t, l = rng.randint(0, size // 2, 2)
    m[t:t + 60, l:l + 80] = rng.randint(1, 256, (60, 80)) / 255.0
    return m


def original_style_url(box, size=256):
    """A mask PNG as the original app saves it: RGBA, painted pixels RGB 255 with antialiased
    alpha, the rest transparent black."""
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(im).ellipse(box, fill=(255, 255, 255, 255))
    im.putpixel((box[0] - 1, (box[1] + box[3]) // 2), (255, 255, 255, 90))   # a soft edge pixel
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def png_url(im, fmt="PNG"):
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ------------------------------------------------------------------------------- format
def test_round_trip_exact(tmp_path):
    rule = rules.Rule(key=[(3, quantised_mask(0)), (100001, quantised_mask(1))],
                      object=(2, quantised_mask(2)), paste=(694, quantised_mask(3)),
                      query=(5, quantised_mask(4)), model="church", layer="layer8", rank=2,
                      extra={"note": "kept"})
    path = tmp_path / "r.json"
    text = rules.write_rule(rule, path)
    d = json.loads(text)
    assert d["key"][0][1].startswith("data:image/png;base64,") and d["note"] == "kept"
    back = rules.read_rule(path)
    assert [n for n, _ in back.key] == [3, 100001]
    for (_, a), (_, b) in zip(rule.key + [rule.object, rule.paste, rule.query],
                              back.key + [back.object, back.paste, back.query]):
        assert a.shape == b.shape == (256, 256)
        np.testing.assert_array_equal(a, b)
    assert (back.model, back.layer, back.rank, back.extra) == ("church", "layer8", 2, {"note": "kept"})
    # JSON text and a parsed dict read the same
    assert rules.read_rule(text).paste[0] == 694 and rules.read_rule(d).object[0] == 2
    # a small bool mask is written at 256x256 (nearest) and reads back as the same blocks
    small = np.zeros((16, 16), bool)
    small[2:5, 3:9] = True
    r2 = rules.read_rule(rules.write_rule(rules.Rule(paste=(1, small))))
    np.testing.assert_array_equal(r2.paste[1], np.kron(small, np.ones((16, 16))).astype(np.float32))


def test_original_style_data_url():
    url = original_style_url((60, 40, 120, 100))
    d = {"key": [[7, url]], "object": [2, url], "paste": [694, url], "query": [1, url],
         "unknown_field": {"x": 1}}
    rule = rules.read_rule(json.dumps(d))
    m = rule.key[0][1]
    assert m.shape == (256, 256) and m.dtype == np.float32
    assert set(np.unique(m)) == {0.0, 1.0}          # alpha ignored: R channel only
    assert m[70, 90] == 1 and m[0, 0] == 0 and m[70, 59] == 1
    assert rule.extra == {"unknown_field": {"x": 1}} and rule.model is None
    small = rules.mask_at(m, 16)                     # PIL bilinear, 8-bit like the original
    assert small.shape == (16, 16) and 0 < small.max() <= 1


BAD_RULES = [
    ("{not json", "malformed JSON"),
    ("[1, 2]", "JSON object"),
    ('{"key": 5}', "'key' must be a list"),
    ('{"key": [[1]]}', "'key'\\[0\\]: expected"),
    ('{"key": [[-1, "data:image/png;base64,AA=="]]}', "non-negative integer"),
    ('{"key": [[1.5, "x"]]}', "non-negative integer"),
    ('{"key": [[true, "x"]]}', "non-negative integer"),
    ('{"paste": [1, 5]}', "expected a PNG data URL string"),
    ('{"paste": [1, "data:image/jpeg;base64,AAAA"]}', "not a PNG data URL"),
    ('{"paste": [1, "data:image/png;base64,@@@@"]}', "not valid base64"),
    ('{"paste": [1, "data:image/png;base64,AAAA"]}', "not a readable PNG"),
    ('{"rank": 0}', "'rank' must be a positive integer"),
    ('{"rank": "2"}', "'rank' must be a positive integer"),
    ('{"layer": 4}', "'layer' must be a non-empty string"),
    ('{"not": "a rule"}', "not a rule file: it has none of the fields 'key', 'object', 'paste' \\(its fields: 'not'\\)"),
    ("{}", "not a rule file"),
]


@pytest.mark.parametrize("text,match", BAD_RULES)
def test_bad_rules(text, match):
    with pytest.raises(ValueError, match=match):
        rules.read_rule(text)


def test_rule_file_errors_name_the_file_not_its_folder(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError) as e:
        rules.read_rule(bad)
    assert str(e.value).startswith("broken.json: malformed JSON") and str(tmp_path) not in str(e.value)


def test_bad_data_urls(tmp_path):
    big = png_url(Image.new("L", (5000, 2)))                     # header checked before decoding
    with pytest.raises(ValueError, match="5000x2"):
        rules.decode_mask(big)
    jpeg = png_url(Image.new("RGB", (8, 8)), fmt="JPEG")          # JPEG bytes behind a PNG prefix
    with pytest.raises(ValueError, match="not a readable PNG"):
        rules.decode_mask(jpeg)
    good = png_url(Image.new("L", (256, 256)))
    payload = good[len("data:image/png;base64,"):]
    truncated = "data:image/png;base64," + payload[:len(payload) // 8 * 4]
    with pytest.raises(ValueError, match="not a readable PNG"):
        rules.decode_mask(truncated)
    with pytest.raises(ValueError, match="too long"):
        rules.decode_mask("data:image/png;base64," + "A" * (rules.MAX_DATA_URL_CHARS + 4))
    with pytest.raises(FileNotFoundError):
        rules.read_rule(tmp_path / "missing.json")
    p = tmp_path / "bad.json"
    p.write_text('{"object": [1, "data:image/png;base64,AAAA"]}')
    with pytest.raises(ValueError, match="bad.json: 'object'"):
        rules.read_rule(p)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        rules.encode_mask(np.full((4, 4), 2.0))


# ------------------------------------------------------------------------------- apply_rule
def _mask(t, l, b, r):
    m = np.zeros((256, 256), np.float32)
    m[t:b, l:r] = 1
    return m


@pytest.fixture(scope="module")
def tiny():
    g = make_progan()
    return g, rw.collect_key_stats(g, "layer4", range(6))


def test_apply_rule_progan(tiny):
    g, st = tiny
    rule = rules.Rule(key=[(0, _mask(32, 32, 128, 128)), (1, _mask(96, 96, 224, 224))],
                      object=(2, _mask(64, 64, 160, 192)), paste=(3, _mask(0, 128, 96, 256)),
                      layer="layer4")
    info = {}
    edit = rules.apply_rule(g, rules.write_rule(rule), C=st, info=info)
    assert isinstance(edit, WeightEdit) and edit.layer == "layer4"
    assert edit.lam.shape == (8, 1, 3, 3) and edit.dirs.shape == (1, 8)
    assert info["loss"] < info["loss_before"]
    # same pieces by hand give the same update
    D = rw.context_direction(g, "layer4", [(n, rules.mask_at(m, 16)) for n, m in rule.key], st)
    clip = rw.copy_value(g, "layer4", 2, rules.mask_at(rule.object[1], 16))
    c = rw.paste_center(g, "layer4", rules.mask_at(rule.paste[1], 16))
    target, region = rw.paste_target(g, "layer4", 3, clip, c)
    manual = rw.rewrite(g, "layer4", D, 3, target, region, st)
    assert_close(manual.lam, edit.lam)
    # rank from the rule, explicit rank, erase
    rule.rank = 2
    assert rules.apply_rule(g, rule, C=st).rank == 2
    assert rules.apply_rule(g, rule, C=st, rank=3).rank == 3
    e = rules.apply_rule(g, rule, C=st, erase=True, drank=2)
    assert "erase" in e.label


def test_erase_rule_round_trip_and_apply(tiny):
    g, st = tiny
    rule = rules.Rule(key=[(0, _mask(32, 32, 128, 128))], layer="layer4", erase=True)
    text = rules.write_rule(rule)
    assert json.loads(text)["erase"] is True and "object" not in json.loads(text)
    back = rules.read_rule(text)
    assert back.erase and back.object is None
    e = rules.apply_rule(g, back, C=st, drank=2)          # the rule's flag selects erase
    assert "erase" in e.label
    assert "erase" not in json.loads(rules.write_rule(rules.Rule(key=rule.key)))
    with pytest.raises(rules.RuleError, match="'erase' must be true or false"):
        rules.read_rule(json.dumps({"key": [], "erase": "yes"}))


def test_apply_rule_errors(tiny, progan_bundle):
    import core
    g, st = tiny
    m = _mask(32, 32, 128, 128)
    ok = rules.Rule(key=[(0, m)], object=(2, m), paste=(3, m), layer="layer4")
    with pytest.raises(ValueError, match="made for layer 'layer4', not 'layer3'"):
        rules.apply_rule(g, ok, layer="layer3", C=st)
    with pytest.raises(ValueError, match="no layer"):
        rules.apply_rule(g, rules.Rule(key=[(0, m)], object=(2, m), paste=(3, m)), C=st)
    with pytest.raises(KeyError, match="unknown layer"):
        rules.apply_rule(g, rules.Rule(key=[(0, m)], object=(2, m), paste=(3, m), layer="layer99"), C=st)
    model = core.load_model(progan_bundle)
    other = rules.Rule(key=[(0, m)], object=(2, m), paste=(3, m), layer="layer4", model="church")
    with pytest.raises(ValueError, match="made for model 'church', not 'tiny-progan'"):
        rules.apply_rule(model, other, C=st)
    with pytest.raises(ValueError, match="empty context"):
        rules.apply_rule(g, rules.Rule(object=(2, m), layer="layer4"), C=st)
    with pytest.raises(ValueError, match="empty context"):
        rules.apply_rule(g, rules.Rule(key=[(0, np.zeros((256, 256), np.float32))],
                                       object=(2, m), paste=(3, m), layer="layer4"), C=st)
    with pytest.raises(ValueError, match="no object"):
        rules.apply_rule(g, rules.Rule(key=[(0, m)], paste=(3, m), layer="layer4"), C=st)
    with pytest.raises(ValueError, match="empty paste mask"):
        rules.apply_rule(g, rules.Rule(key=[(0, m)], object=(2, m),
                                       paste=(3, np.zeros((256, 256), np.float32)),
                                       layer="layer4"), C=st)
    with pytest.raises(ValueError, match="rank 9 is larger than the layer's 8 key channels"):
        rules.apply_rule(g, ok, rank=9, C=st)
    tiny_ctx = np.zeros((256, 256), np.float32)
    tiny_ctx[0:4, 0:4] = 1                             # one pixel at 16 px -> one key pixel
    with pytest.raises(ValueError, match="number of context pixels"):
        rules.apply_rule(g, rules.Rule(key=[(0, tiny_ctx)], object=(2, m), paste=(3, m),
                                       layer="layer4"), rank=2, C=st)
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        rules.apply_rule(g, ok, rank=0, C=st)
    with pytest.raises(rw.MissingStatsError, match="python -m core stats"):
        rules.apply_rule(model, ok)
