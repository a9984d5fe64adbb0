"""Edited models as downloads: a session's edit stack written as one small zip (the edits, a
model card naming the base model, before/after previews) that ``core.load_model`` and the
``core.load_edited`` API reopen bit for bit."""
from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from core.edited_files import ShareError, zip_edited
from core.share import export_edited


def edited_model_zip(model, stack, previews, what: str) -> str:
    """The path of a zip holding ``stack`` on ``model`` (``previews``: image numbers rendered
    before/after); ``what`` names the edit in the file name and the card."""
    if not len(stack):
        raise gr.Error("No edits yet: make an edit first, then download the edited model.")
    folder = Path(tempfile.mkdtemp(prefix="pwn-edited-")) / f"{model.bundle.name}-{what}"
    try:
        export_edited(model, stack, folder, previews=tuple(previews), name=folder.name,
                      description=f"{what} made in the Painting with Neurons app")
    except ShareError as e:
        raise gr.Error(f"Cannot save this edited model: {e}") from None
    return str(zip_edited(folder))
