"""One rule for a model's paint layer, rewrite layer, rank and presets (core.settings)."""
from types import SimpleNamespace

from core.settings import MAX_RANK, model_settings


def _model(cfg, n_layers):
    return SimpleNamespace(bundle=SimpleNamespace(config=cfg), layers=[f"layer{i}" for i in range(1, n_layers + 1)])


def test_defaults_without_config():
    # a 14-layer gandissect ProGAN without settings paints and rewrites at layer4 (GANPaint's layer)
    s = model_settings(_model({}, 14))
    assert (s.paint_layer, s.rewrite_layer, s.rewrite_rank, s.presets, s.metrics) == ("layer4", "layer4", 1, (), {})
    # without a layer4, the layer 40% of the way in
    s = model_settings(SimpleNamespace(layers=["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]))
    assert s.paint_layer == "d"


def test_config_values_and_bad_ones():
    cfg = {"paint_layer": "layer6", "rewrite_layer": "layer8", "rewrite_rank": 3,
           "presets": ["b", 7, "a"], "metrics": {"quality": {"fsd": 1.0}}, "photo_penalty": 3}
    s = model_settings(_model(cfg, 12))
    assert (s.paint_layer, s.rewrite_layer, s.rewrite_rank, s.presets) == ("layer6", "layer8", 3, ("b", "a"))
    assert s.photo_penalty == 3.0
    assert s.metrics["quality"]["fsd"] == 1.0
    bad = {"paint_layer": "layer99", "rewrite_layer": 8, "rewrite_rank": MAX_RANK + 1, "presets": "x",
           "metrics": [1], "photo_penalty": -2}
    s = model_settings(_model(bad, 12))
    assert (s.paint_layer, s.rewrite_layer, s.rewrite_rank, s.presets, s.metrics) == ("layer4", "layer4", 1, (), {})
    assert s.photo_penalty == 1.0 and model_settings(_model({"photo_penalty": "3"}, 12)).photo_penalty == 1.0
    assert model_settings(_model({"rewrite_rank": True}, 12)).rewrite_rank == 1
