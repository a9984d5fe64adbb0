"""The mask editor of the Rewrite and Watermarks tabs: ``gr.ImageEditor`` with a plain error for
unreadable input, and the hide/show pair that avoids its hang on a new background."""
from __future__ import annotations

import gradio as gr
from PIL import Image


class CheckedImageEditor(gr.ImageEditor):
    """``gr.ImageEditor`` whose unreadable input (a text file, a truncated or empty image sent
    as a layer or background through the API) is refused with a plain message, not Gradio's
    generic "upstream exception". Same frontend as ``gr.ImageEditor``."""

    is_template = True

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            raise gr.Error("The editor sent something that is not a readable image (a layer or "
                           "the background is not a PNG or JPEG, or is truncated or empty). "
                           "Reload the image and paint again.") from None


def hidden_editor():
    """Before a new image goes into an editor, hide it; show it again after (``shown_editor``).

    Gradio 6.31's ImageEditor can hang (blank, "processing") and lose the next strokes when a
    new background reaches it while it is still taking in a stroke. An editor hidden, given its
    value and shown again is mounted afresh, which avoids it (a browser probe of the Rewrite tab:
    10 of 10 hangs before, 0 of 9 after)."""
    return CheckedImageEditor(visible=False)


def shown_editor():
    return CheckedImageEditor(visible=True)
