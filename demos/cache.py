"""Image files for galleries and images are written atomically.

Gradio writes each image an event returns (gallery items, ``gr.Image`` values) into its cache
folder, under a name made from the image's bytes, and Gradio 6.31's
``processing_utils.save_pil_to_cache`` writes that file in place. Two events returning the same
image (two tabs rendering the same samples at page load) then rewrite a file while it is being
served: the browser gets a broken thumbnail (ERR_CONTENT_LENGTH_MISMATCH; the server logs h11's
"Too much data for declared Content-Length"). :func:`use_atomic_image_cache` replaces that
function by one writing the same file atomically, so a file being served is never rewritten in
place (and a PNG faster). (Gradio's ``save_file_to_cache`` already copies files this way.)
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from gradio import processing_utils


def write_atomically(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a unique temporary file in the same folder renamed over
    it: a reader sees the old file or the new one, never a partly written one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """Gradio's ``processing_utils.save_pil_to_cache`` (the same folder and file name), written
    atomically; a PNG with zlib's fastest level (still lossless, ~3x faster to encode)."""
    if format.lower() == "png":
        with io.BytesIO() as out:
            img.save(out, "png", pnginfo=processing_utils.get_pil_metadata(img), compress_level=1)
            data = out.getvalue()
    else:
        data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    path = (folder / f"{name}.{format}").resolve()
    write_atomically(path, data)
    return str(path)


def use_atomic_image_cache() -> None:
    """Make Gradio write image files through :func:`save_pil_to_cache` (galleries, images and
    image editors call it through the module, as does ``save_img_array_to_cache``)."""
    processing_utils.save_pil_to_cache = save_pil_to_cache
