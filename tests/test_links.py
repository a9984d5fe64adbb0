"""demos.links: the view parameters a link carries, checked against the model."""
from __future__ import annotations

import urllib.parse

import core
from core.bundle import save_bundle
from demos import links
from tests.conftest import make_progan


def test_check_keeps_valid_parameters_and_says_why_others_are_dropped(tmp_path):
    model = core.load_model(save_bundle(make_progan(), tmp_path / "b", name="b"))
    ok, notes = links.check({"tab": "dissect", "layer": "layer4", "unit": "3", "images": "0-7",
                             "image": "12", "preset": "trees"}, model, ["trees"])
    assert ok == {"tab": "dissect", "layer": "layer4", "unit": 3, "images": "0-7", "image": 12,
                  "preset": "trees"} and notes == []
    ok, notes = links.check({"tab": "nope", "layer": "layer99", "unit": "-1", "images": "0-999",
                             "image": "x", "preset": "domes", "colour": "red"}, model, ["trees"])
    assert ok == {}
    assert len(notes) == 7 and all("ignored" in n for n in notes)
    assert any("layer99" in n and "layer1" in n for n in notes)          # names the valid layers
    assert "unit='-1' ignored" in " ".join(notes) and "image='x' ignored: not a whole number" in notes


def test_query_has_the_current_tab_model_and_values(tmp_path):
    q = links.query("dissect", "stylegan2-church", "default", {"layer": "layer8", "unit": 12.0})
    assert urllib.parse.parse_qs(q[1:]) == {"tab": ["dissect"], "model": ["stylegan2-church"],
                                           "layer": ["layer8"], "unit": ["12"]}
    # the default model, local files and uploads are not part of a link
    assert links.query("explore", "default", "default", {"images": "0-15"}) == "?tab=explore&images=0-15"
    assert "model" not in links.query("paint", str(tmp_path), "default", {"image": None})


def test_share_panel_signs_in_on_a_space_and_takes_a_token_elsewhere(monkeypatch):
    import gradio as gr

    from demos.sharing import SharePanel

    def build():
        with gr.Blocks() as demo:
            SharePanel("t", lambda: None, [])
        return demo
    local = build()
    assert not any(isinstance(b, gr.LoginButton) for b in local.blocks.values())
    monkeypatch.setenv("SPACE_ID", "me/space")
    monkeypatch.setenv("OAUTH_CLIENT_ID", "x")
    monkeypatch.setenv("SYSTEM", "spaces")          # what a Space with hf_oauth sets
    for name in ("OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_SCOPES", "OPENID_PROVIDER_URL"):
        monkeypatch.setattr(f"gradio.oauth.{name}", "x", raising=False)   # read at import there
    space = build()
    assert any(isinstance(b, gr.LoginButton) for b in space.blocks.values())
    token = next(b for b in space.blocks.values() if getattr(b, "elem_id", None) == "t_push_token")
    assert token.visible is False


def test_parameters_of_gradio_and_of_the_space_are_not_the_views():
    from demos.link_pages import view_params
    assert view_params([("__theme", "dark"), ("__sign", "x"), ("view", "api"), ("deep_link", "k"),
                        ("tab", "paint"), ("image", "7")]) == {"tab": "paint", "image": "7"}
