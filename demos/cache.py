"""Image files for galleries and images: written atomically, and served from memory.

Gradio writes each image an event returns (gallery items, ``gr.Image`` values) into its cache
folder, under a name made from the image's bytes, and Gradio 6.31's
``processing_utils.save_pil_to_cache`` writes that file in place. Two events returning the same
image (two tabs rendering the same samples at page load) then rewrite a file while it is being
served: the browser gets a broken thumbnail (ERR_CONTENT_LENGTH_MISMATCH; the server logs h11's
"Too much data for declared Content-Length"). :func:`use_atomic_image_cache` replaces that
function by one writing the same file atomically, so a file being served is never rewritten in
place (and a PNG faster). (Gradio's ``save_file_to_cache`` already copies files this way.)

The bytes of the most recent images written so are kept in memory too, and
:class:`RecentImagesMiddleware` answers the browser's requests for them without Gradio's file
route, which costs ~6 ms of server time per image: a page shows 30-60 of them at once, and on a
small server the browser waits for them one after the other. Only those files are served so, by
their exact path; each name is a hash of its bytes, so a browser may keep them.

:class:`FrontendAssetsMiddleware` does the same for Gradio's frontend build (``/assets/<name>``):
a first visit fetches ~60 script and style files, which Gradio reads from disk and
brotli-compresses again for every request, while the browser also needs the server's CPU to
start the page. They are compressed once, kept in memory, and sent with a year's cache lifetime:
each name carries a hash of the file's content.
"""
from __future__ import annotations

import gzip
import io
import mimetypes
import os
import tempfile
import threading
import urllib.parse
from collections import OrderedDict
from pathlib import Path

import anyio
import brotli
from gradio import processing_utils
from gradio.route_utils import BUILD_PATH_LIB


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
    RECENT.put(str(path), data, f"image/{format.lower()}")
    return str(path)


class RecentFiles:
    """The bytes of the files put most recently (with their MIME type), up to ``limit`` bytes in
    all."""

    def __init__(self, limit: int = 64 << 20):
        self.limit, self.size = limit, 0
        self.files: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self.lock = threading.Lock()

    def put(self, path: str, data: bytes, mime: str) -> None:
        with self.lock:
            old = self.files.pop(path, None)
            self.size += len(data) - (len(old[0]) if old else 0)
            self.files[path] = (data, mime)
            while self.size > self.limit:
                _, (dropped, _) = self.files.popitem(last=False)
                self.size -= len(dropped)

    def get(self, path: str) -> tuple[bytes, str] | None:
        with self.lock:
            return self.files.get(path)


RECENT = RecentFiles()       # the images written
FILE_ROUTE = "/gradio_api/file="


class RecentImagesMiddleware:
    """Answers ``GET /gradio_api/file=<path>`` from :data:`RECENT` when it holds that path; every
    other request goes on to Gradio."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith(FILE_ROUTE):
            found = RECENT.get(urllib.parse.unquote(scope["path"][len(FILE_ROUTE):]))
            if found is not None:
                data, mime = found
                await _send_file(send, data, mime, b"private, max-age=3600, immutable")
                return
        await self.app(scope, receive, send)


async def _send_file(send, data: bytes, mime: str, cache_control: bytes, encoding: str = "") -> None:
    headers = [(b"content-type", mime.encode()), (b"content-length", str(len(data)).encode()),
               (b"cache-control", cache_control)]
    if encoding:     # Gradio's own compression (BrotliMiddleware) leaves an encoded body as it is
        headers += [(b"content-encoding", encoding.encode()), (b"vary", b"Accept-Encoding")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


FRONTEND = Path(BUILD_PATH_LIB)         # the folder served as /assets
ASSETS_ROUTE = "/assets/"
COMPRESSED = (".js", ".css", ".svg", ".ttf")     # woff and woff2 fonts are compressed already


class FrontendAssetsMiddleware:
    """Answers ``GET /assets/<name>`` for the files of Gradio's frontend build from memory,
    compressed once per encoding (brotli, else gzip, as the browser accepts); every other request,
    a range request included, goes on to Gradio."""

    def __init__(self, app):
        self.app = app
        self.names = frozenset(os.listdir(FRONTEND)) if FRONTEND.is_dir() else frozenset()
        self.kept = RecentFiles(32 << 20)   # bounded, whatever is asked: a page needs ~2.5 MB

    def encode(self, name: str, encoding: str) -> tuple[bytes, str]:
        """Read and compress ``name`` and keep it."""
        data = (FRONTEND / name).read_bytes()
        if encoding == "br":
            data = brotli.compress(data, quality=5)
        elif encoding == "gzip":
            data = gzip.compress(data, compresslevel=6)
        found = (data, mimetypes.guess_type(name)[0] or "application/octet-stream")
        self.kept.put(f"{name}:{encoding}", *found)
        return found

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith(ASSETS_ROUTE):
            name = scope["path"][len(ASSETS_ROUTE):]
            headers = dict(scope["headers"])
            if name in self.names and b"range" not in headers:     # a listed name: no path to escape
                accepted = headers.get(b"accept-encoding", b"").decode("latin-1")
                encoding = ("" if not name.endswith(COMPRESSED) else "br" if "br" in accepted
                            else "gzip" if "gzip" in accepted else "")
                found = (self.kept.get(f"{name}:{encoding}")       # else read once, off the event loop
                         or await anyio.to_thread.run_sync(self.encode, name, encoding))
                await _send_file(send, *found, b"public, max-age=31536000, immutable", encoding)
                return
        await self.app(scope, receive, send)


def use_atomic_image_cache() -> None:
    """Make Gradio write image files through :func:`save_pil_to_cache` (galleries, images and
    image editors call it through the module, as does ``save_img_array_to_cache``)."""
    processing_utils.save_pil_to_cache = save_pil_to_cache
