"""Toytown: procedural town scenes with an exact per-pixel label map.

Every scene is drawn back to front (sky, clouds, hills and grass, buildings with roofs, windows and
doors, towers topped by spires or domes, trees), so the label of a pixel is simply the class of the
last shape painted there. About 7% of scenes carry a semi-transparent stock-photo watermark: a word
in the middle and/or a bar along the bottom, always in the same place, as in scraped photo sets.

    images, labels = render_batch(seed=0, n=16)   # uint8 [n,64,64,3], uint8 [n,64,64]

Deterministic per (seed, index): image i of a seed is the same whatever the batch it is drawn in.
"""
from __future__ import annotations

import bisect
import functools
import math

import numpy as np

CLASSES = ["sky", "cloud", "grass", "tree", "wall", "window", "door", "roof", "spire", "dome",
           "watermark"]
SKY, CLOUD, GRASS, TREE, WALL, WINDOW, DOOR, ROOF, SPIRE, DOME, WATERMARK = range(len(CLASSES))
# A colour per class for label maps (sky blue, cloud white, grass green, ...).
PALETTE = np.array([[110, 170, 240], [245, 245, 245], [70, 170, 60], [20, 90, 30], [200, 160, 110],
                    [40, 50, 110], [120, 60, 20], [170, 40, 40], [240, 200, 40], [150, 60, 200],
                    [255, 0, 255]], dtype=np.uint8)

WATERMARK_RATE = 0.07
WATERMARK_WORD = "PHOTO"
# 3x5 bitmap glyphs for the watermark word and the bar's small text.
_GLYPHS = {
    "P": ["111", "101", "111", "100", "100"], "H": ["101", "101", "111", "101", "101"],
    "O": ["111", "101", "101", "101", "111"], "T": ["111", "010", "010", "010", "010"],
    "S": ["111", "100", "111", "001", "111"], "C": ["111", "100", "100", "100", "111"],
    "K": ["101", "110", "100", "110", "101"],
}


@functools.lru_cache(maxsize=None)
def _text_mask(word: str, scale: int) -> np.ndarray:
    cols = []
    for ch in word:
        g = np.array([[c == "1" for c in row] for row in _GLYPHS[ch]])
        cols += [g, np.zeros((5, 1), bool)]
    m = np.concatenate(cols[:-1], axis=1)
    m = np.kron(m, np.ones((scale, scale), bool))
    m.flags.writeable = False  # cached and shared
    return m


_GRIDS: dict[int, np.ndarray] = {}
_CENTRES: dict[int, np.ndarray] = {}


def _grid(size: int):
    if size not in _GRIDS:
        _GRIDS[size] = np.mgrid[0:size, 0:size].astype(np.float32)
    return _GRIDS[size]


def _centres(size: int) -> np.ndarray:
    """Pixel-centre coordinates 0.5, 1.5, ... (float32), the same along rows and columns."""
    if size not in _CENTRES:
        c = np.arange(size, dtype=np.float32) + 0.5
        c.flags.writeable = False
        _CENTRES[size] = c
    return _CENTRES[size]


_COLOURS32: dict[tuple, np.ndarray] = {}


def _f32(color) -> np.ndarray:
    """``np.asarray(color, np.float32)``, cached (read-only) for the constant colour tuples."""
    if type(color) is tuple:
        c = _COLOURS32.get(color)
        if c is None:
            c = np.asarray(color, np.float32)
            c.flags.writeable = False
            _COLOURS32[color] = c
        return c
    return np.asarray(color, np.float32)


class Canvas:
    """An RGB float image and its label map, with clipped drawing primitives.

    Speed notes (every pixel is computed with the same float32 operations as in the plain
    version, so the output is bit-identical; tests/test_toytown.py pins it): the image is stored
    as colour planes; the grain factor ``1 + texture * grain`` is computed once per texture for
    the whole canvas; ellipse and triangle masks are built from one row term and one column term
    (both shapes are separable); masked fills use ``np.copyto(where=)`` instead of boolean
    indexing; and shapes of one colour drawn back to back (a building's windows, a tree's leaf
    blobs) are filled as one union.
    """

    def __init__(self, size: int, rng: np.random.RandomState):
        self.n = size
        self.rng = rng
        # The image is stored as three colour planes (fills then run along rows instead of over
        # 3-channel pixels); ``img`` is the usual [S,S,3] view of the same memory.
        self.planes = np.zeros((3, size, size), np.float32)
        self.img = self.planes.transpose(1, 2, 0)
        self.lab = np.zeros((size, size), np.uint8)
        self.yy, self.xx = _grid(size)
        self.centres = _centres(size)
        # Low-amplitude texture shared by all surfaces of this scene (stucco, leaves, grass).
        self.grain = rng.uniform(-1, 1, (size, size)).astype(np.float32)
        self._factors: dict[float, np.ndarray] = {}

    def factor(self, texture) -> np.ndarray:
        """``1 + texture * grain`` over the whole canvas, cached per texture."""
        f = self._factors.get(texture)
        if f is None:
            f = self._factors[texture] = 1 + texture * self.grain
        return f

    def _box(self, x0, y0, x1, y1):
        n = self.n
        return max(math.floor(y0), 0), min(math.ceil(y1), n), max(math.floor(x0), 0), min(math.ceil(x1), n)

    def paint(self, mask, box, color, label, texture=0.06):
        """Fill ``mask`` (bool, the size of ``box``) with ``color`` (+ grain), labelled ``label``."""
        r0, r1, c0, c1 = box
        if r1 <= r0 or c1 <= c0:
            return
        patch = _f32(color)[:, None, None] * self.factor(texture)[r0:r1, c0:c1]
        np.copyto(self.planes[:, r0:r1, c0:c1], patch, where=mask)
        np.copyto(self.lab[r0:r1, c0:c1], label, where=mask)

    def rect(self, x0, y0, x1, y1, color, label, texture=0.06):
        n = self.n
        r0, r1 = max(math.floor(y0), 0), min(math.ceil(y1), n)
        c0, c1 = max(math.floor(x0), 0), min(math.ceil(x1), n)
        if r1 > r0 and c1 > c0:
            np.multiply(_f32(color)[:, None, None], self.factor(texture)[r0:r1, c0:c1],
                        out=self.planes[:, r0:r1, c0:c1])
            self.lab[r0:r1, c0:c1] = label

    def rect_grid(self, yspans, xspans, color, label, texture=0.06):
        """``rect(x0, y0, x1, y1, ...)`` for every (y0, y1) in ``yspans`` and (x0, x1) in ``xspans``.

        The rectangles share colour, texture and label, so drawing them one after the other paints
        exactly their union: the pixels in some row span and in some column span.
        """
        n = self.n
        rows, cols = np.zeros(n, bool), np.zeros(n, bool)
        for mask, spans in ((rows, yspans), (cols, xspans)):
            for lo, hi in spans:
                lo, hi = max(math.floor(lo), 0), min(math.ceil(hi), n)
                if hi > lo:  # (a negative hi must not become a slice from the end)
                    mask[lo:hi] = True
        r, c = np.flatnonzero(rows), np.flatnonzero(cols)
        if len(r) and len(c):
            r0, r1, c0, c1 = r[0], r[-1] + 1, c[0], c[-1] + 1
            self.paint(rows[r0:r1, None] & cols[None, c0:c1], (r0, r1, c0, c1), color, label, texture)

    def _ellipse_mask(self, cx, cy, rx, ry, upper_only=False):
        """(mask, box) of an ellipse, or None where its box is empty."""
        box = self._box(cx - rx, cy - ry, cx + rx + 1, (cy + 1) if upper_only else cy + ry + 1)
        r0, r1, c0, c1 = box
        if r1 <= r0 or c1 <= c0:
            return None
        ys, xs = self.centres[r0:r1], self.centres[c0:c1]
        m = (((xs - cx) / rx) ** 2)[None, :] + (((ys - cy) / ry) ** 2)[:, None] <= 1
        if upper_only:
            m &= (ys <= cy + 0.5)[:, None]
        return m, box

    def ellipse(self, cx, cy, rx, ry, color, label, texture=0.06, upper_only=False):
        mb = self._ellipse_mask(cx, cy, rx, ry, upper_only)
        if mb is not None:
            self.paint(*mb, color, label, texture)

    def ellipses(self, params, color, label, texture=0.06):
        """``ellipse(cx, cy, rx, ry, ...)`` for each tuple in ``params``: one fill of their union
        (they share colour, texture and label, so the order they are drawn in does not matter)."""
        parts = [mb for mb in (self._ellipse_mask(*q) for q in params) if mb is not None]
        if not parts:
            return
        r0, r1 = min(b[0] for _, b in parts), max(b[1] for _, b in parts)
        c0, c1 = min(b[2] for _, b in parts), max(b[3] for _, b in parts)
        union = np.zeros((r1 - r0, c1 - c0), bool)
        for m, (a0, a1, b0, b1) in parts:
            union[a0 - r0:a1 - r0, b0 - c0:b1 - c0] |= m
        self.paint(union, (r0, r1, c0, c1), color, label, texture)

    def triangle(self, cx, top, base_y, half_width, color, label, texture=0.04):
        """An isosceles triangle with its apex at (cx, top) and base from cx±half_width at base_y."""
        box = self._box(cx - half_width, top, cx + half_width + 1, base_y)
        r0, r1, c0, c1 = box
        if r1 <= r0 or c1 <= c0:
            return
        ys, xs = self.centres[r0:r1], self.centres[c0:c1]
        hw = half_width * (ys - top) / max(base_y - top, 1e-3)
        self.paint(np.abs(xs - cx)[None, :] <= hw[:, None], box, color, label, texture)


def _jitter(rng, color, amount=0.08):
    """The colour with each channel scaled by a random factor in [1-amount, 1+amount]."""
    # Same float64 arithmetic as numpy's, per channel, then rounded to float32 like ``astype``.
    a, b, c = rng.random_sample(3).tolist()
    f = np.array([1 + amount * (2 * a - 1), 1 + amount * (2 * b - 1), 1 + amount * (2 * c - 1)], np.float32)
    return _f32(color) * f


_CUMULATIVE: dict[tuple, tuple[list, float]] = {}


def _pick(rng, options, p):
    """``rng.choice(options, p=p)`` without its per-call overhead."""
    key = tuple(p)
    cum = _CUMULATIVE.get(key)
    if cum is None:  # np.cumsum and sum() exactly as before, computed once per probability list
        cum = _CUMULATIVE[key] = (np.cumsum(p).tolist(), sum(p))
    return options[bisect.bisect_right(cum[0], rng.random_sample() * cum[1])]


WALL_COLOURS = [(0.85, 0.78, 0.62), (0.72, 0.38, 0.30), (0.70, 0.70, 0.70), (0.92, 0.90, 0.85),
                (0.80, 0.65, 0.45), (0.60, 0.55, 0.50)]
ROOF_COLOURS = [(0.55, 0.15, 0.12), (0.30, 0.30, 0.35), (0.45, 0.28, 0.18), (0.25, 0.35, 0.45)]
SPIRE_COLOURS = [(0.35, 0.38, 0.42), (0.25, 0.45, 0.40), (0.50, 0.22, 0.18), (0.30, 0.30, 0.32)]
DOME_COLOURS = [(0.30, 0.55, 0.48), (0.80, 0.68, 0.30), (0.45, 0.45, 0.55), (0.70, 0.40, 0.25)]


def _windows(cv, rng, x0, x1, y0, y1, lit):
    """A grid of windows inside the wall box, leaving room for the door at the bottom."""
    w = x1 - x0
    win_w = 2 + rng.randint(2)
    win_h = 3 + rng.randint(2)
    cols = max(1, int((w - 2) // (win_w + 3)))
    rows = max(0, int((y1 - y0 - 8) // (win_h + 3)))
    colour = (0.95, 0.85, 0.40) if lit else _jitter(rng, (0.15, 0.20, 0.35), 0.2)
    gap = (w - cols * win_w) / (cols + 1)
    if rows:  # window (r, c) spans rows wy_r .. wy_r + win_h and columns wx_c .. wx_c + win_w
        wys = [y0 + 3 + r * (win_h + 3) for r in range(rows)]
        wxs = [x0 + gap + c * (win_w + gap) for c in range(cols)]
        cv.rect_grid([(wy, wy + win_h) for wy in wys], [(wx, wx + win_w) for wx in wxs], colour, WINDOW, 0.02)


def _building(cv, rng, x0, width, ground, lit):
    height = rng.uniform(12, 26)
    top = ground - height
    wall = _jitter(rng, WALL_COLOURS[rng.randint(len(WALL_COLOURS))])
    cv.rect(x0, top, x0 + width, ground, wall, WALL)
    roof = _jitter(rng, ROOF_COLOURS[rng.randint(len(ROOF_COLOURS))])
    if rng.rand() < 0.75:  # gable roof
        cv.triangle(x0 + width / 2, top - rng.uniform(5, 10), top + 0.5, width / 2 + 1.5, roof, ROOF)
    else:                  # flat roof with a parapet
        cv.rect(x0 - 1, top - 2, x0 + width + 1, top, roof, ROOF)
    _windows(cv, rng, x0, x0 + width, top, ground, lit)
    door_w = rng.uniform(3, 5)
    door_h = min(rng.uniform(6, 9), height - 3)
    dx = x0 + width / 2 - door_w / 2 + rng.uniform(-width / 4, width / 4)
    cv.rect(dx, ground - door_h, dx + door_w, ground, _jitter(rng, (0.40, 0.22, 0.10), 0.25), DOOR, 0.03)


def _tower(cv, rng, cx, width, ground, kind, lit):
    """A tower with a spire ("spire") or a dome ("dome") on top."""
    height = rng.uniform(20, 34)
    top = ground - height
    wall = _jitter(rng, WALL_COLOURS[rng.randint(len(WALL_COLOURS))])
    cv.rect(cx - width / 2, top, cx + width / 2, ground, wall, WALL)
    # A belfry opening or a window column.
    cv.rect(cx - 1, top + 3, cx + 1, top + 7, (0.95, 0.85, 0.40) if lit else (0.10, 0.12, 0.20), WINDOW, 0.02)
    if kind == "spire":
        colour = _jitter(rng, SPIRE_COLOURS[rng.randint(len(SPIRE_COLOURS))])
        cv.triangle(cx, top - rng.uniform(1.6, 2.6) * width, top + 0.5, width / 2 + 1, colour, SPIRE)
    else:
        colour = _jitter(rng, DOME_COLOURS[rng.randint(len(DOME_COLOURS))])
        r = width / 2 + rng.uniform(1.5, 3.5)
        cv.ellipse(cx, top, r, r * rng.uniform(0.9, 1.3), colour, DOME, 0.04, upper_only=True)
        cv.rect(cx - 0.5, top - r * 1.3 - 3, cx + 0.5, top - r * 1.1, colour, DOME, 0.0)


def _tree(cv, rng, cx, ground, scale):
    trunk_h = rng.uniform(4, 8) * scale
    trunk = _jitter(rng, (0.35, 0.22, 0.12), 0.15)
    cv.rect(cx - 1 * scale, ground - trunk_h, cx + 1 * scale, ground, trunk, TREE, 0.05)
    leaves = _jitter(rng, (0.12, 0.42, 0.15), 0.25)
    if rng.rand() < 0.4:  # conifer
        cv.triangle(cx, ground - trunk_h - rng.uniform(12, 18) * scale, ground - trunk_h * 0.5,
                    rng.uniform(4, 6) * scale, leaves, TREE, 0.25)
    else:                 # broadleaf: a cluster of blobs
        r = rng.uniform(4, 7) * scale
        cy = ground - trunk_h - r * 0.7
        blobs = [(cx + rng.uniform(-r, r) * 0.5, cy + rng.uniform(-r, r) * 0.4,
                  r * rng.uniform(0.6, 0.9), r * rng.uniform(0.5, 0.8)) for _ in range(3)]
        cv.ellipses(blobs, leaves, TREE, 0.3)


def _watermark(cv, rng):
    """The stock-photo mark: white word in the middle and/or a dark bar with small text."""
    n = cv.n
    kind = _pick(rng, ["word", "bar", "both"], [0.5, 0.25, 0.25])
    if kind in ("bar", "both"):
        bar = (cv.yy >= n - 9)
        cv.img[bar] = cv.img[bar] * 0.45 + 0.55 * np.array([0.10, 0.10, 0.12], np.float32)
        small = _text_mask("STOCK", 1)
        r0, c0 = n - 7, n // 2 - small.shape[1] // 2
        region = np.zeros_like(bar)
        region[r0:r0 + small.shape[0], c0:c0 + small.shape[1]] = small
        cv.img[region] = cv.img[region] * 0.3 + 0.7
        cv.lab[bar] = WATERMARK
    if kind in ("word", "both"):
        big = _text_mask(WATERMARK_WORD, 2)
        h, w = big.shape
        r0, c0 = n // 2 - h // 2, n // 2 - w // 2
        region = np.zeros((n, n), bool)
        region[r0:r0 + h, c0:c0 + w] = big
        cv.img[region] = cv.img[region] * 0.45 + 0.55
        cv.lab[region] = WATERMARK


def _draw_scene(rng: np.random.RandomState, size: int = 64) -> Canvas:
    """Draw one scene; returns its canvas (float image in [0, 255] before rounding, and labels)."""
    cv = Canvas(size, rng)
    n = size
    s = n / 64
    # --- lighting: day, overcast, dusk
    mood = _pick(rng, ["day", "overcast", "dusk"], [0.6, 0.2, 0.2])
    top_col, bottom_col = {
        "day": ((0.25, 0.50, 0.90), (0.65, 0.80, 0.98)),
        "overcast": ((0.55, 0.60, 0.68), (0.78, 0.80, 0.84)),
        "dusk": ((0.25, 0.25, 0.55), (0.98, 0.62, 0.35)),
    }[mood]
    horizon = rng.uniform(0.55, 0.75) * n
    t = np.minimum(np.arange(n, dtype=np.float32) / horizon, 1)[:, None, None]
    cv.planes[:] = (_jitter(rng, top_col) * (1 - t) + _jitter(rng, bottom_col) * t).transpose(2, 0, 1)
    cv.lab[:] = SKY
    # --- clouds
    for _ in range(rng.poisson(1.5)):
        cx, cy = rng.uniform(0, n), rng.uniform(0.05, 0.4) * n
        grey = (0.97, 0.97, 0.98) if mood != "overcast" else (0.88, 0.88, 0.9)
        if mood == "dusk":
            grey = (0.98, 0.80, 0.70)
        for _ in range(rng.randint(2, 5)):
            cv.ellipse(cx + rng.uniform(-8, 8) * s, cy + rng.uniform(-2, 2) * s, rng.uniform(4, 9) * s,
                       rng.uniform(2, 4) * s, _jitter(rng, grey, 0.03), CLOUD, 0.02)
    # --- ground: grass with a gentle hill line
    amp, freq, phase = rng.uniform(0, 4) * s, rng.uniform(0.5, 2) / n, rng.uniform(0, 2 * np.pi)
    rows = np.arange(n, dtype=np.float32)[:, None]
    hill = horizon + amp * np.sin(2 * np.pi * freq * np.arange(n) + phase)
    g = _jitter(rng, (0.30, 0.62, 0.22), 0.15)
    # Only the rows from the hill's highest point down can hold grass.
    r0 = int(np.searchsorted(rows[:, 0] >= hill.min(), True))
    rows = rows[r0:]
    grass = rows >= hill[None, :]
    shade = 0.85 + 0.3 * (rows - horizon) / (n - horizon + 1e-3)
    grass_rgb = g[:, None, None] * (shade * cv.factor(0.08)[r0:])
    np.copyto(cv.planes[:, r0:], grass_rgb, where=grass)
    np.copyto(cv.lab[r0:], GRASS, where=grass)
    # --- buildings and towers along a base line just below the horizon
    lit = mood == "dusk" and rng.rand() < 0.6
    base = horizon + rng.uniform(2, 6) * s
    slots = []
    x = rng.uniform(-6, 10) * s
    while x < n - 6 * s:
        kind = _pick(rng, ["building", "church", "tower", "gap"], [0.35, 0.3, 0.2, 0.15])
        slots.append((kind, x))
        x += {"building": rng.uniform(18, 30), "church": rng.uniform(26, 36), "tower": rng.uniform(12, 18),
              "gap": rng.uniform(6, 14)}[kind] * s
    if not any(k in ("church", "tower") for k, _ in slots) and rng.rand() < 0.6:
        i = rng.randint(len(slots))
        slots[i] = ("church", slots[i][1])
    for kind, x in slots:
        ground = base + rng.uniform(-1, 2) * s
        top_kind = "spire" if rng.rand() < 0.55 else "dome"
        if kind == "building":
            _building(cv, rng, x, rng.uniform(14, 24) * s, ground, lit)
        elif kind == "tower":
            _tower(cv, rng, x + 5 * s, rng.uniform(8, 12) * s, ground, top_kind, lit)
        elif kind == "church":
            tw = rng.uniform(8, 12) * s
            left = rng.rand() < 0.5
            body_x = x + (tw - 2 if left else 0)
            _tower(cv, rng, x + tw / 2 if left else x + 20 * s, tw, ground, top_kind, lit)
            _building(cv, rng, body_x, rng.uniform(16, 22) * s, ground, lit)
    # --- trees in front, on the grass
    for _ in range(rng.poisson(1.6)):
        _tree(cv, rng, rng.uniform(0, n), rng.uniform(base + 2 * s, n + 2 * s), s * rng.uniform(0.8, 1.3))
    # --- global light level and a stock-photo watermark on a few images
    cv.planes *= rng.uniform(0.85, 1.1) * 255
    if rng.rand() < WATERMARK_RATE:
        cv.img /= 255
        _watermark(cv, rng)
        cv.img *= 255
    return cv


def _quantise(cv: Canvas, out: np.ndarray | None = None) -> np.ndarray:
    """The canvas's float [0, 255] image -> uint8 [S,S,3], rounded to nearest
    (``np.clip(img + 0.5, 0, 255).astype(np.uint8)``, computed in place on the planes)."""
    p = cv.planes
    np.add(p, 0.5, out=p)
    np.clip(p, 0, 255, out=p)
    q = p.astype(np.uint8)
    if out is None:
        out = np.empty(cv.img.shape, np.uint8)
    for c in range(3):  # planar -> interleaved, a plane at a time (much faster than one strided copy)
        out[..., c] = q[c]
    return out


def render_scene(rng: np.random.RandomState, size: int = 64):
    """One scene drawn with ``rng``: (uint8 [S,S,3] image, uint8 [S,S] labels)."""
    cv = _draw_scene(rng, size)
    return _quantise(cv), cv.lab


def render_batch(seed: int, n: int, start: int = 0, size: int = 64):
    """Scenes ``start .. start+n-1`` of ``seed``: (uint8 [n,S,S,3], uint8 [n,S,S])."""
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty((n, size, size), np.uint8)
    # Re-seeding one generator gives exactly the state of a fresh RandomState([seed, start + i]),
    # without the fresh one's OS-entropy seeding (which took a tenth of the time per scene).
    rng = np.random.RandomState(0)
    for i in range(n):
        rng.seed([seed, start + i])
        cv = _draw_scene(rng, size)
        _quantise(cv, images[i])
        labels[i] = cv.lab
    return images, labels


def colorize(labels: np.ndarray) -> np.ndarray:
    """Label map(s) -> RGB using ``PALETTE``."""
    return PALETTE[labels]


if __name__ == "__main__":
    import argparse
    import time

    ap = argparse.ArgumentParser(description="Toytown renderer; --speed measures single-core throughput.")
    ap.add_argument("--speed", action="store_true", help="time render_batch and print images/s")
    ap.add_argument("--n", type=int, default=500, help="images to time")
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    if args.speed:
        render_batch(0, 10, size=args.size)  # warm-up (caches, imports)
        t0, c0 = time.perf_counter(), time.process_time()
        render_batch(1, args.n, size=args.size)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{args.n} images at {args.size} px: {args.n / wall:.0f} images/s wall, "
              f"{args.n / cpu:.0f} images/s of CPU time")
    else:
        ap.print_help()
