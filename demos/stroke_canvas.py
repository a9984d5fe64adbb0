"""A light brush canvas: the image shown crisply at the model's own size, strokes drawn on top in
the browser, and only the strokes' mask sent to the server.

Why not ``gr.ImageEditor``: after every stroke it exports its canvases (software WebGL in a
headless or GPU-less browser) and uploads the background, the layers and the composite; nothing
reached the server for ~1.1 s after a release, and strokes drawn in that window could be lost.
Here a stroke's mask is one small PNG data URL (a few kB) inside the event itself, and the new
image comes back as a data URL of the model's size: no upload, no file to fetch.

From the browser, the value is the mask: ``""`` (nothing painted) or
``data:image/png;base64,...`` whose alpha (or any channel) > 0 marks painted pixels; the handler
receives it as a bool ``HxW`` array, or None. From the server, the value is an answer:
``StrokeCanvas.show(image)`` (a new image; the strokes sent are done) or ``StrokeCanvas.ack()``
(the strokes sent are done, the image unchanged), each with a fresh ``epoch`` so that the browser
sees every answer.

In the browser, with ``live`` on, a stroke is sent on release. Strokes drawn while one is on its
way wait and are sent together when the answer arrives, so every stroke lands on the image it was
drawn on, and none is dropped (the event's ``trigger_mode`` must be ``"always_last"`` or
``"multiple"``; the browser itself never sends a second stroke before the first is answered).
With ``live`` off, strokes accumulate into the value and an Apply button (or a concept change)
consumes them.

A live stroke's answer carries only what must change at once (the canvas and the edit list); the
``settled`` event fires when the painter has paused for ``SETTLE_MS`` after an answer, for the
views that can wait (a before/after slider, a downloadable PNG), so a burst of strokes costs one
update of them instead of one per stroke.
"""
from __future__ import annotations

import base64
import binascii
import html
import io
import itertools

import gradio as gr
import numpy as np
from PIL import Image

import core

MAX_MASK_CHARS = 4_000_000            # a data URL longer than this is refused, not decoded
MAX_MASK_SIDE = 2048
_EPOCHS = itertools.count(1)          # any fresh number tells the browser "answered"

# Static: formatted in Python (``_template``). What changes reaches the browser as the value
# (the image) or as the ``color``/``live`` props, which the JS reads with fallbacks: Gradio replaces
# a component's props by the latest update's when the update arrives before the component is
# mounted (a tab not shown yet), so nothing may rely on a prop being present.
TEMPLATE = """
<div class="sc-frame" style="max-width:@DISPLAY@px" data-color="@COLOR@" data-live="@LIVE@"
     data-brush="@BRUSH@">
  <div class="sc-wrap">
    <img class="sc-bg" alt="the image to paint on" draggable="false" style="visibility:hidden">
    <canvas class="sc-ink" width="@SIZE@" height="@SIZE@"></canvas>
    <div class="sc-empty">@PLACEHOLDER@</div>
  </div>
  <div class="sc-bar">
    <span class="sc-swatch"></span>
    <span class="sc-note"></span>
    <button class="sc-clear" type="button">Clear strokes</button>
  </div>
</div>
"""

CSS = """
.sc-frame { width: 100%; margin: 0 auto; }
.sc-wrap { position: relative; width: 100%; aspect-ratio: 1 / 1; background: #222;
           border-radius: 6px; overflow: hidden; }
.sc-bg, .sc-ink { position: absolute; inset: 0; width: 100%; height: 100%; }
.sc-bg { image-rendering: pixelated; object-fit: contain; user-select: none; }
.sc-ink { touch-action: none; cursor: crosshair; }
.sc-empty { position: absolute; inset: 0; display: flex; align-items: center;
            justify-content: center; color: #bbb; }
.sc-bar { display: flex; align-items: center; gap: 8px; margin-top: 6px; font-size: 0.9em; }
.sc-swatch { width: 18px; height: 18px; border-radius: 50%; border: 1px solid #888; }
.sc-note { flex: 1; opacity: 0.8; }
.sc-clear { padding: 2px 10px; border: 1px solid var(--border-color-primary, #ccc);
            border-radius: 4px; background: var(--button-secondary-background-fill, #eee); }
"""

JS = """
const frame = element.querySelector('.sc-frame');
const ink = element.querySelector('.sc-ink');
const bg = element.querySelector('.sc-bg');
const g = ink.getContext('2d');
const brush = parseFloat(frame.dataset.brush);
const opt = (k, d) => (props[k] === undefined || props[k] === null ? d : props[k]);
const live = () => opt('live', frame.dataset.live === 'true');
const color = () => opt('color', frame.dataset.color);
const SETTLE_MS = 600;
let sent = [], pending = [], current = null, busy = false, timer = null, hasImage = false;
let settle = null;

function at(e) {
  const r = ink.getBoundingClientRect();
  return [(e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height];
}
function draw(c, s, side, colour) {
  c.strokeStyle = colour || s.color; c.fillStyle = colour || s.color;
  c.lineWidth = s.size * side; c.lineCap = 'round'; c.lineJoin = 'round';
  const p = s.points;
  if (p.length === 1) {
    c.beginPath(); c.arc(p[0][0] * side, p[0][1] * side, s.size * side / 2, 0, 2 * Math.PI); c.fill();
    return;
  }
  c.beginPath(); c.moveTo(p[0][0] * side, p[0][1] * side);
  for (const [x, y] of p.slice(1)) c.lineTo(x * side, y * side);
  c.stroke();
}
function redraw() {
  g.clearRect(0, 0, ink.width, ink.height);
  g.globalAlpha = 0.6;
  for (const s of [...sent, ...pending, ...(current ? [current] : [])]) draw(g, s, ink.width);
}
function mask(strokes) {
  if (!strokes.length) return '';
  const m = document.createElement('canvas');
  m.width = m.height = ink.width;
  const c = m.getContext('2d');
  for (const s of strokes) draw(c, s, m.width, '#ffffff');
  return m.toDataURL('image/png');
}
function restyle() {
  element.querySelector('.sc-swatch').style.background = color();
  element.querySelector('.sc-note').textContent = live()
    ? 'Each stroke is applied when you release it.' : 'Strokes wait until you apply them.';
}
function showImage() {
  const v = props.value;
  if (!v || typeof v !== 'object' || !('image' in v)) return false;
  hasImage = !!v.image;
  if (hasImage) bg.src = v.image; else bg.removeAttribute('src');
  bg.style.visibility = hasImage ? 'visible' : 'hidden';
  element.querySelector('.sc-empty').style.display = hasImage ? 'none' : 'flex';
  return true;
}
function send() {
  if (busy || !pending.length || !hasImage) return;
  sent = pending; pending = []; busy = true;
  props.value = mask(sent);
  trigger('stroke');
  clearTimeout(timer);
  timer = setTimeout(answered, 20000);      // no answer (a lost connection): stop waiting
}
function answered() {
  clearTimeout(timer);
  const wasStroke = busy;
  busy = false; sent = [];
  if (!live()) pending = [];                // Apply (or a concept change) took them
  redraw();
  if (live()) send();
  clearTimeout(settle);
  if (wasStroke && !busy && !current)       // the painter paused: the slower views catch up
    settle = setTimeout(() => trigger('settled'), SETTLE_MS);
}
ink.addEventListener('pointerdown', e => {
  if (!hasImage || e.button !== 0) return;
  ink.setPointerCapture(e.pointerId);
  clearTimeout(settle);
  current = {points: [at(e)], color: color(), size: brush};
  redraw();
});
ink.addEventListener('pointermove', e => {
  if (!current) return;
  current.points.push(at(e));
  redraw();
});
function release() {
  if (!current) return;
  pending.push(current); current = null;
  redraw();
  if (live()) send(); else props.value = mask(pending);
}
ink.addEventListener('pointerup', release);
ink.addEventListener('pointercancel', release);
element.querySelector('.sc-clear').addEventListener('click', () => {
  pending = []; current = null;
  if (!live()) props.value = '';
  redraw();
});
// an answer from the server: a dict value ({image, epoch} or {epoch}), always a fresh one
watch('value', () => { const v = props.value; if (v && typeof v === 'object') { showImage(); answered(); } });
watch(['color', 'live'], () => {
  restyle();
  if (live()) send(); else if (pending.length) props.value = mask(pending);
});
restyle();
showImage();
"""


def _template(size: int, display: int, brush: float, color: str, live: bool,
              placeholder: str) -> str:
    out = TEMPLATE
    for key, val in (("@SIZE@", int(size)), ("@DISPLAY@", int(display)), ("@BRUSH@", float(brush)),
                     ("@COLOR@", html.escape(color)), ("@LIVE@", "true" if live else "false"),
                     ("@PLACEHOLDER@", html.escape(placeholder))):
        out = out.replace(key, str(val))
    return out


def image_url(image) -> str:
    """An engine image (or PIL image) as a PNG data URL at its own size. Lossless, with the
    fastest compression: for a 256 px image 4x faster to encode than the default, 15% larger."""
    pil = image if isinstance(image, Image.Image) else core.images.to_pil(image)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_mask(value) -> np.ndarray | None:
    """The painted pixels of a canvas value (a PNG data URL, or its bare base64), HxW bool; None
    when nothing is painted. Anything else is refused with a plain message."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    bad = gr.Error("The brush sent something that is not a stroke mask (a PNG data URL). Paint "
                   "again on the image.")
    if not isinstance(value, str) or len(value) > MAX_MASK_CHARS:
        raise bad
    data = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as im:
            if max(im.size) > MAX_MASK_SIDE:
                raise bad
            arr = np.asarray(im.convert("RGBA"))
    except (binascii.Error, ValueError, OSError, SyntaxError, Image.DecompressionBombError):
        raise bad from None
    painted = arr[..., 3] > 0 if arr[..., 3].min() < 255 else arr[..., :3].any(-1)
    return painted if painted.any() else None


def mask_url(mask: np.ndarray) -> str:
    """A bool HxW mask as the value the browser sends (for the API, tests and benches)."""
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[mask] = 255
    return image_url(Image.fromarray(rgba, "RGBA"))


class StrokeCanvas(gr.HTML):
    """The canvas. ``size``: the mask's resolution (pixels per side); ``display``: its largest
    width on screen; ``brush``: the brush's width as a fraction of the image; ``color`` and
    ``live`` change later through ``restyle``."""

    # every argument is named: Gradio rebuilds the component from its constructor's arguments
    # when an update changes one
    def __init__(self, value="", *, size: int = 256, display: int = 512, brush: float = 0.05,
                 color: str = "#ff0000", live: bool = True,
                 placeholder: str = "Load an image to paint on it.", elem_id: str | None = None,
                 **kwargs):
        for fixed in ("html_template", "css_template", "js_on_load"):
            kwargs.pop(fixed, None)
        super().__init__(value=value, elem_id=elem_id, css_template=CSS, js_on_load=JS,
                         html_template=_template(size, display, brush, color, live, placeholder),
                         color=color, live=live, **kwargs)
        # real attributes: gr.HTML answers a name quoted in its JS (``watch('live')``) with an
        # event listener, which Gradio would then send back as the prop
        self.color, self.live = color, live

    def preprocess(self, payload):
        return decode_mask(payload if isinstance(payload, str) else None)

    def postprocess(self, value):
        return value if isinstance(value, (str, dict)) else ""

    def api_info(self):
        return {"type": "string", "description": "the strokes: a PNG data URL whose alpha > 0 "
                "marks painted pixels (any size; square like the image), or '' for none"}

    def example_payload(self):
        return ""

    def example_value(self):
        return ""

    @staticmethod
    def show(image) -> dict:
        """The value that shows a new image to paint on (and answers the strokes sent)."""
        return {"image": image_url(image) if image is not None else None, "epoch": next(_EPOCHS)}

    @staticmethod
    def ack() -> dict:
        """The value that answers the strokes sent, the image unchanged."""
        return {"epoch": next(_EPOCHS)}

    @staticmethod
    def restyle(**props):
        """An update of the brush's ``color`` or of ``live``."""
        return gr.update(**props)
