"""Sharing a session's edits: the edited model as one small zip (the edits, a model card naming
the base model and its pinned revision, before/after previews) that ``core.load_model`` reopens
bit for bit, or pushed to the Hub as a repo of its own (:class:`SharePanel`, in every tab whose
session holds edits)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr

from core.edited_files import ShareError, zip_edited
from core.edits import EditStack
from core.hub import HubError
from core.share import export_edited, push
from demos.context import error_text, warn


def on_space_with_login() -> bool:
    """A Space with ``hf_oauth: true`` (its OAuth app is configured): visitors sign in."""
    return bool(os.environ.get("SYSTEM") == "spaces" and os.environ.get("SPACE_ID")
                and os.environ.get("OAUTH_CLIENT_ID"))


def _export(model, stack, previews, what: str) -> Path:
    if not len(stack):
        raise gr.Error("No edits yet: make an edit first, then share the edited model.")
    if hasattr(model, "base"):      # an edited model opened in the app: its edits, then the session's
        stack, model = EditStack(tuple(model.stack) + tuple(stack)), model.base
    folder = Path(tempfile.mkdtemp(prefix="pwn-edited-")) / f"{model.bundle.name}-{what}"
    try:
        export_edited(model, stack, folder, previews=tuple(previews), name=folder.name,
                      description=f"{what} made in the Painting with Neurons app")
    except ShareError as e:
        raise gr.Error(f"Cannot save this edited model: {e}") from None
    return folder


class SharePanel:
    """Download the session's edited model, or push it to the Hub (private by default).

    ``edited(*inputs)`` gives ``(model, stack, previews, what)`` for the session (raising
    ``gr.Error`` when there is nothing to share). On a Space with sign-in, visitors push with
    their own login (``gr.LoginButton``); elsewhere with a token they paste. The server's own
    token is never used for a visitor's push."""

    def __init__(self, prefix: str, edited, inputs: list):
        self.edited = edited
        with gr.Accordion("Share the edited model", open=False, elem_id=f"{prefix}_share"):
            with gr.Row():
                download = gr.Button("Download the edited model (.zip)", scale=1,
                                     elem_id=f"{prefix}_download")
                self.file = gr.File(label="Edited model: open it in the picker above, or with "
                                          "core.load_model(path)", interactive=False, scale=3,
                                    elem_id=f"{prefix}_model_file")
            with gr.Row():
                login = on_space_with_login()
                if login:
                    gr.LoginButton(scale=1)
                repo = gr.Textbox(label="Hub repo", placeholder="your-name/my-edited-model", scale=2,
                                  elem_id=f"{prefix}_push_repo")
                token = gr.Textbox(label="Hugging Face token (write access; used once, not kept)",
                                   type="password", scale=2, visible=not login,
                                   elem_id=f"{prefix}_push_token")
                private = gr.Checkbox(True, label="Private repo", scale=1)
                push_btn = gr.Button("Push to the Hub", scale=1, elem_id=f"{prefix}_push")
            self.status = gr.Markdown(elem_id=f"{prefix}_share_status")
        download.click(self.download, inputs, [self.file, self.status], api_name=f"{prefix}_download")
        push_btn.click(self.push, [*inputs, repo, token, private], self.status,
                       api_name=f"{prefix}_push", concurrency_limit=2)

    def download(self, *inputs):
        try:
            model, stack, previews, what = self.edited(*inputs)
            path = zip_edited(_export(model, stack, previews, what))
        except Exception as e:  # noqa: BLE001 - shown; the last file stays
            return gr.skip(), warn(error_text(e))
        return str(path), (f"Saved {len(stack)} edit(s) as **{path.name}** "
                           f"({path.stat().st_size / 1000:.0f} kB).")

    def push(self, *args, oauth_token: gr.OAuthToken | None = None):
        *inputs, repo, token, private = args
        repo = str(repo or "").strip()
        token = getattr(oauth_token, "token", None) or str(token or "").strip()
        if not repo:
            return warn("Type the Hub repo to push to, as your-name/model-name.")
        if not token:
            return warn("Sign in (or paste a Hugging Face token with write access) to push: "
                        "nothing was sent.")
        try:
            model, stack, previews, what = self.edited(*inputs)
            result = push(_export(model, stack, previews, what), repo, token=token,
                          private=bool(private))
        except (HubError, ShareError, gr.Error) as e:
            return warn(f"Not pushed: {error_text(e)}")
        size = sum(n for _, n in result.files) / 1000
        return (f"Pushed {len(stack)} edit(s) to **[{result.repo_id}]({result.url})** "
                f"({'private' if private else 'public'}, {len(result.files)} files, {size:.0f} kB). "
                f"Anyone with access opens it by typing `{result.repo_id}` in the model picker.")


def edited_model_zip(model, stack, previews, what: str) -> str:
    """The path of a zip holding ``stack`` on ``model`` (``previews``: image numbers rendered
    before/after); ``what`` names the edit in the file name and the card."""
    return str(zip_edited(_export(model, stack, previews, what)))
