"""Toytown 2: procedural town scenes with an exact per-pixel label map, made to be learned.

A scene is a function of one latent vector: its random choices are read from fixed slots of
``u = Phi(z)`` (``z`` ~ N(0, I) of ``Z_DIM``, ``Phi`` the normal CDF), so ``render_latents(z)`` is a
deterministic function of ``z``. That lets a generator be regressed onto its data pixel by pixel
(``training.gan --recipe regress``), and a scene is reproducible from its latent alone.

What makes it learnable by a small GAN (Toytown 1 was not, see the model card):
- flat shading and smooth gradients, no per-pixel grain (a generator without noise inputs cannot
  draw grain, and a discriminator uses its absence as an easy tell);
- every detail at least 3 px wide at 64 px (windows, doors, trunks, the watermark's strokes);
- towers with a spire or a dome in most scenes, large enough to see;
- a bold stock-photo watermark on ``WATERMARK_RATE`` of the scenes, always in the same place: the
  word PHOTO in 3-px strokes across the middle, a dark banner along the bottom, or both.

Drawn back to front (sky, clouds, hills and grass, buildings with roofs, windows and doors,
towers, trees, watermark), so a pixel's label is the class of the last shape painted there.

    images, labels = render_batch(seed=0, n=16)    # uint8 [n,64,64,3], uint8 [n,64,64]
    z = latents(seed=0, n=16)                      # the [n,128] latents those scenes came from

Image i of a seed depends on (seed, i) alone, whatever the batch it is drawn in.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy.special import ndtr

CLASSES = ["sky", "cloud", "grass", "tree", "wall", "window", "door", "roof", "spire", "dome",
           "watermark"]
SKY, CLOUD, GRASS, TREE, WALL, WINDOW, DOOR, ROOF, SPIRE, DOME, WATERMARK = range(len(CLASSES))
# A colour per class for label maps (sky blue, cloud white, grass green, ...).
PALETTE = np.array([[110, 170, 240], [245, 245, 245], [70, 170, 60], [20, 90, 30], [200, 160, 110],
                    [40, 50, 110], [120, 60, 20], [170, 40, 40], [240, 200, 40], [150, 60, 200],
                    [255, 0, 255]], dtype=np.uint8)

Z_DIM = 128
WATERMARK_RATE = 0.17
WATERMARK_KINDS = {"word": 0.6, "banner": 0.2, "both": 0.2}   # shares of the watermarked scenes
WATERMARK_WORD = "PHOTO"
_GLYPHS = {  # 3x5 bitmaps, drawn at 3x scale (3-px strokes)
    "P": ["111", "101", "111", "100", "100"], "H": ["101", "101", "111", "101", "101"],
    "O": ["111", "101", "101", "101", "111"], "T": ["111", "010", "010", "010", "010"],
}
# Slots per part of a scene; the parts sit at fixed offsets of u whatever the scene holds.
GLOBAL_SLOTS, CLOUD_SLOTS, STRUCTURE_SLOTS, TREE_SLOTS = 11, 4, 22, 6
N_CLOUDS, N_STRUCTURES, N_TREES = 2, 4, 3
N_SLOTS = GLOBAL_SLOTS + 1 + N_CLOUDS * CLOUD_SLOTS + N_STRUCTURES * STRUCTURE_SLOTS + N_TREES * TREE_SLOTS
assert N_SLOTS <= Z_DIM


class Slots:
    """Random choices read in order from a fixed block of ``u``; ``block(k)`` hands the next k
    slots to a part of the scene, so what that part draws never shifts the slots of the next."""

    def __init__(self, u: np.ndarray):
        self.u, self.i = u, 0

    def next(self) -> float:
        if self.i >= len(self.u):
            raise IndexError("a part of the scene read more slots than it was given")
        self.i += 1
        return float(self.u[self.i - 1])

    def block(self, k: int) -> "Slots":
        self.i += k
        if self.i > len(self.u):
            raise IndexError("slot blocks overrun the latent")
        return Slots(self.u[self.i - k:self.i])

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.next()

    def colour(self, palette: list, lo: float = 0.85, hi: float = 1.15) -> tuple:
        """A colour of ``palette`` shaded by a factor in [lo, hi), from one slot: its integer part
        picks the colour, its fractional part the shade."""
        v = self.next() * len(palette)
        i = min(int(v), len(palette) - 1)
        return _shade(palette[i], lo + (hi - lo) * (v - i))

    def pick(self, shares: dict):
        """A key of ``shares`` with probability proportional to its value."""
        v, total = self.next() * sum(shares.values()), 0.0
        for key, p in shares.items():
            total += p
            if v < total:
                return key
        return key


# ----------------------------------------------------------------------------- drawing
class Canvas:
    """An RGB float image (colour planes, values in [0, 1]) and its label map, with clipped shapes."""

    def __init__(self, size: int):
        self.n = size
        self.planes = np.zeros((3, size, size), np.float32)
        self.lab = np.zeros((size, size), np.uint8)
        self.centres = np.arange(size, dtype=np.float32) + 0.5

    def _box(self, x0, y0, x1, y1):
        n = self.n
        return max(math.floor(y0), 0), min(math.ceil(y1), n), max(math.floor(x0), 0), min(math.ceil(x1), n)

    def paint(self, mask, box, colour, label):
        r0, r1, c0, c1 = box
        if r1 > r0 and c1 > c0:
            np.copyto(self.planes[:, r0:r1, c0:c1], np.asarray(colour, np.float32)[:, None, None], where=mask)
            np.copyto(self.lab[r0:r1, c0:c1], label, where=mask)

    def rect(self, x0, y0, x1, y1, colour, label):
        """Pixels whose centres lie inside the rectangle (a shape of width w covers about w px)."""
        r0, r1, c0, c1 = (max(round(y0), 0), min(round(y1), self.n), max(round(x0), 0), min(round(x1), self.n))
        if r1 > r0 and c1 > c0:
            self.planes[:, r0:r1, c0:c1] = np.asarray(colour, np.float32)[:, None, None]
            self.lab[r0:r1, c0:c1] = label

    def ellipse(self, cx, cy, rx, ry, colour, label, upper_only=False):
        box = self._box(cx - rx, cy - ry, cx + rx, cy if upper_only else cy + ry)
        r0, r1, c0, c1 = box
        if r1 <= r0 or c1 <= c0:
            return
        ys, xs = self.centres[r0:r1], self.centres[c0:c1]
        self.paint((((xs - cx) / rx) ** 2)[None, :] + (((ys - cy) / ry) ** 2)[:, None] <= 1, box, colour, label)

    def triangle(self, cx, top, base_y, half_width, colour, label):
        """An isosceles triangle with its apex at (cx, top) and base from cx±half_width at base_y."""
        box = self._box(cx - half_width, top, cx + half_width, base_y)
        r0, r1, c0, c1 = box
        if r1 <= r0 or c1 <= c0:
            return
        ys, xs = self.centres[r0:r1], self.centres[c0:c1]
        hw = half_width * (ys - top) / max(base_y - top, 1e-3)
        self.paint(np.abs(xs - cx)[None, :] <= hw[:, None], box, colour, label)


def _shade(colour, f: float):
    return tuple(min(c * f, 1.0) for c in colour)


WALL_COLOURS = [(0.85, 0.78, 0.62), (0.72, 0.38, 0.30), (0.70, 0.70, 0.70), (0.92, 0.90, 0.85),
                (0.80, 0.65, 0.45), (0.60, 0.55, 0.50)]
ROOF_COLOURS = [(0.55, 0.15, 0.12), (0.30, 0.30, 0.35), (0.45, 0.28, 0.18), (0.25, 0.35, 0.45)]
SPIRE_COLOURS = [(0.35, 0.38, 0.42), (0.25, 0.45, 0.40), (0.50, 0.22, 0.18), (0.30, 0.30, 0.32)]
DOME_COLOURS = [(0.30, 0.55, 0.48), (0.80, 0.68, 0.30), (0.45, 0.45, 0.55), (0.70, 0.40, 0.25)]
LIT_WINDOW, DARK_WINDOW = (0.95, 0.85, 0.40), (0.15, 0.20, 0.35)
SKIES = {"day": ((0.25, 0.50, 0.90), (0.65, 0.80, 0.98)),
         "overcast": ((0.55, 0.60, 0.68), (0.78, 0.80, 0.84)),
         "dusk": ((0.25, 0.25, 0.55), (0.98, 0.62, 0.35))}
CLOUD_COLOURS = {"day": (0.97, 0.97, 0.98), "overcast": (0.88, 0.88, 0.90), "dusk": (0.98, 0.80, 0.70)}


def _building(cv, u: Slots, x0, ground, s, window):
    width, height = u.uniform(16, 24) * s, u.uniform(14, 26) * s
    top = ground - height
    cv.rect(x0, top, x0 + width, ground, u.colour(WALL_COLOURS, 0.85, 1.1), WALL)
    roof = u.colour(ROOF_COLOURS)
    gable, roof_h = u.next() < 0.75, u.uniform(6, 11) * s
    if gable:
        cv.triangle(x0 + width / 2, top - roof_h, top + 0.5, width / 2 + 1.5 * s, roof, ROOF)
    else:  # flat roof with a parapet
        cv.rect(x0 - s, top - 3 * s, x0 + width + s, top, roof, ROOF)
    # A grid of windows (3-4 px, 3-px gaps) above the door's height.
    win_w, win_h = (s * v for v in u.pick({(3, 3): 1, (3, 4): 1, (4, 4): 1}))
    cols = max(1, int((width - 3 * s) // (win_w + 3 * s)))
    rows = max(0, int((height - 12 * s) // (win_h + 3 * s)))
    gap = (width - cols * win_w) / (cols + 1)
    for r in range(rows):
        wy = top + 3 * s + r * (win_h + 3 * s)
        for c in range(cols):
            wx = x0 + gap + c * (win_w + gap)
            cv.rect(wx, wy, wx + win_w, wy + win_h, window, WINDOW)
    door_w, door_h = u.uniform(4, 6) * s, min(u.uniform(7, 10) * s, height - 3 * s)
    dx = x0 + width / 2 - door_w / 2 + u.uniform(-0.25, 0.25) * (width - door_w)
    cv.rect(dx, ground - door_h, dx + door_w, ground, u.colour([(0.40, 0.22, 0.10)], 0.8, 1.2), DOOR)
    return width


def _tower(cv, u: Slots, cx, ground, s, window):
    """A tower with a spire or a dome on top."""
    width, height = u.uniform(10, 14) * s, u.uniform(20, 32) * s
    top = ground - height
    cv.rect(cx - width / 2, top, cx + width / 2, ground, u.colour(WALL_COLOURS, 0.85, 1.1), WALL)
    cv.rect(cx - 1.5 * s, top + 4 * s, cx + 1.5 * s, top + 8 * s, window, WINDOW)  # the belfry
    spire, size = u.next() < 0.5, u.next()
    if spire:
        cv.triangle(cx, top - (1.5 + size) * width, top + 0.5, width / 2 + 1.5 * s, u.colour(SPIRE_COLOURS), SPIRE)
    else:
        r = width / 2 + (2 + 2 * size) * s
        colour = u.colour(DOME_COLOURS)
        cv.ellipse(cx, top + 0.5, r, r * u.uniform(0.9, 1.3), colour, DOME, upper_only=True)
    return width


def _structure(cv, u: Slots, x, base, s, window) -> float:
    """The structure in one slot of the street (or a gap); returns the x where the next one starts."""
    kind = u.pick({"building": 0.3, "church": 0.35, "tower": 0.25, "gap": 0.1})
    ground, gap = base + u.uniform(-1, 2) * s, u.uniform(1, 6) * s
    body, tower = u.block(11), u.block(7)
    if kind == "gap":
        return x + 8 * s + gap
    if kind == "tower":
        return x + _tower(cv, tower, x + 7 * s, ground, s, window) / 2 + 7 * s + gap
    if kind == "building":
        return x + _building(cv, body, x, ground, s, window) + gap
    # a church: a tower at one end of a building, drawn behind it
    left = u.next() < 0.5
    tower_x = x + 6 * s if left else x + 24 * s
    _tower(cv, tower, tower_x, ground, s, window)
    body_w = _building(cv, body, x + (10 * s if left else 0), ground, s, window)
    return max(tower_x + 7 * s, x + body_w + (10 * s if left else 0)) + gap


def _tree(cv, u: Slots, base, n, s):
    if u.next() > 0.55:   # not every slot holds a tree
        return
    cx, ground, scale = u.uniform(0, n), u.uniform(base + 3 * s, n + 2 * s), s * u.uniform(0.8, 1.3)
    conifer, leaves = u.next() < 0.4, _shade((0.12, 0.42, 0.15), u.uniform(0.75, 1.25))
    trunk_h = 6 * scale
    cv.rect(cx - 1.5 * scale, ground - trunk_h, cx + 1.5 * scale, ground, (0.35, 0.22, 0.12), TREE)
    if conifer:
        cv.triangle(cx, ground - trunk_h - 15 * scale, ground - trunk_h * 0.5, 5 * scale, leaves, TREE)
    else:  # three overlapping blobs
        r = 5.5 * scale
        cy = ground - trunk_h - r * 0.6
        for dx, dy, f in ((-0.5, 0.1, 0.75), (0.5, 0.1, 0.75), (0.0, -0.35, 0.85)):
            cv.ellipse(cx + dx * r, cy + dy * r, r * f, r * f * 0.85, leaves, TREE)


@functools.lru_cache(maxsize=None)
def _word_mask(size: int) -> np.ndarray:
    """The watermark word at 3-px strokes per 64 px, centred on a ``size`` canvas (read-only)."""
    cols = []
    for ch in WATERMARK_WORD:
        cols += [np.array([[c == "1" for c in row] for row in _GLYPHS[ch]]), np.zeros((5, 1), bool)]
    glyphs = np.concatenate(cols[:-1], axis=1)
    scale = max(1, round(3 * size / 64))
    m = np.kron(glyphs, np.ones((scale, scale), bool))
    h, w = m.shape
    m = m[max(0, (h - size) // 2):][:size, max(0, (w - size) // 2):][:, :size]  # tiny canvases: clip
    h, w = m.shape
    out = np.zeros((size, size), bool)
    r0, c0 = size // 2 - h // 2, size // 2 - w // 2
    out[r0:r0 + h, c0:c0 + w] = m
    out.flags.writeable = False
    return out


def _watermark(cv, kind: str):
    """Semi-transparent: the word lightens what is under it, the banner darkens it."""
    n = cv.n
    if kind in ("banner", "both"):
        b = n - round(10 * n / 64)
        cv.planes[:, b:] = cv.planes[:, b:] * 0.4 + 0.6 * np.float32(0.08)
        cv.lab[b:] = WATERMARK
    if kind in ("word", "both"):
        m = _word_mask(n)
        cv.planes[:, m] = cv.planes[:, m] * 0.35 + 0.65
        cv.lab[m] = WATERMARK


def _draw_scene(u: np.ndarray, size: int = 64) -> Canvas:
    """The scene of slot values ``u`` (in [0, 1), at least ``N_SLOTS`` of them)."""
    n, s = size, size / 64
    cv = Canvas(size)
    slots = Slots(u)
    g = slots.block(GLOBAL_SLOTS)
    mood = g.pick({"day": 0.6, "overcast": 0.2, "dusk": 0.2})
    horizon = g.uniform(0.58, 0.72) * n
    top_col, bottom_col = (np.array(_shade(c, g.uniform(0.9, 1.08)), np.float32) for c in SKIES[mood])
    t = np.minimum((np.arange(n, dtype=np.float32) + 0.5) / horizon, 1)
    cv.planes[:] = (top_col[:, None] * (1 - t) + bottom_col[:, None] * t)[:, :, None]
    cv.lab[:] = SKY
    amp, freq, phase = g.uniform(0, 4) * s, g.uniform(0.5, 2) / n, g.uniform(0, 2 * np.pi)
    grass = np.array(_shade((0.30, 0.62, 0.22), g.uniform(0.85, 1.15)), np.float32)
    lit = g.next() < 0.6  # windows are lit at dusk
    window = LIT_WINDOW if mood == "dusk" and lit else DARK_WINDOW
    light = g.uniform(0.88, 1.08)
    mark = g.next()
    # --- clouds: three overlapping ellipses each
    for _ in range(N_CLOUDS):
        c = slots.block(CLOUD_SLOTS)
        if c.next() < 0.6:
            cx, cy, k = c.uniform(0, n), c.uniform(0.08, 0.35) * n, c.uniform(0.7, 1.3) * s
            for dx, dy, rx, ry in ((-6, 0, 5, 2.5), (0, -1.5, 7, 3.5), (6, 0.5, 5, 2.5)):
                cv.ellipse(cx + dx * k, cy + dy * k, rx * k, ry * k, CLOUD_COLOURS[mood], CLOUD)
    # --- grass below a gentle hill line, a little darker towards the bottom
    rows = np.arange(n, dtype=np.float32)[:, None] + 0.5
    hill = horizon + amp * np.sin(2 * np.pi * freq * np.arange(n) + phase)
    ground = rows >= hill[None, :]
    shade = 1.05 - 0.25 * np.clip((rows - horizon) / (n - horizon), 0, 1)
    np.copyto(cv.planes, grass[:, None, None] * shade[None], where=ground[None])
    cv.lab[ground] = GRASS
    # --- a street of buildings, churches and towers just below the horizon
    base = horizon + 4 * s
    x = slots.block(1).uniform(-6, 4) * s
    for _ in range(N_STRUCTURES):
        block = slots.block(STRUCTURE_SLOTS)
        if x < n - 4 * s:
            x = _structure(cv, block, x, base, s, window)
    # --- trees in front, on the grass
    for _ in range(N_TREES):
        _tree(cv, slots.block(TREE_SLOTS), base, n, s)
    cv.planes *= light
    if mark < WATERMARK_RATE:
        _watermark(cv, Slots(np.array([mark / WATERMARK_RATE])).pick(WATERMARK_KINDS))
    return cv


# ----------------------------------------------------------------------------- batches
def latents(seed: int, n: int, start: int = 0) -> np.ndarray:
    """The latents of scenes ``start .. start+n-1`` of ``seed``: float32 [n, Z_DIM]."""
    rng = np.random.RandomState(0)
    z = np.empty((n, Z_DIM), np.float32)
    for i in range(n):
        rng.seed([seed, start + i])
        z[i] = rng.standard_normal(Z_DIM)
    return z


def render_latents(z: np.ndarray, size: int = 64):
    """Scenes of latents ``z`` [n, >= N_SLOTS]: (uint8 [n,S,S,3] images, uint8 [n,S,S] labels)."""
    u = ndtr(np.asarray(z, np.float64)[:, :N_SLOTS])
    images = np.empty((len(u), size, size, 3), np.uint8)
    labels = np.empty((len(u), size, size), np.uint8)
    for i, row in enumerate(u):
        cv = _draw_scene(row, size)
        images[i] = np.clip(cv.planes * 255 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        labels[i] = cv.lab
    return images, labels


def render_batch(seed: int, n: int, start: int = 0, size: int = 64):
    """Scenes ``start .. start+n-1`` of ``seed``: (uint8 [n,S,S,3], uint8 [n,S,S])."""
    return render_latents(latents(seed, n, start), size)


def colorize(labels: np.ndarray) -> np.ndarray:
    """Label map(s) -> RGB using ``PALETTE``."""
    return PALETTE[labels]


if __name__ == "__main__":
    import argparse
    import time

    ap = argparse.ArgumentParser(description="Toytown renderer: --speed measures single-core "
                                             "throughput, --grid PATH saves scenes beside their labels.")
    ap.add_argument("--speed", action="store_true", help="time render_batch and print images/s")
    ap.add_argument("--grid", help="save a PNG grid of --n scenes (image above labels)")
    ap.add_argument("--n", type=int, default=500, help="images to time or show")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    if args.speed:
        render_batch(0, 10, size=args.size)  # warm-up (caches, imports)
        t0, c0 = time.perf_counter(), time.process_time()
        render_batch(args.seed, args.n, size=args.size)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{args.n} images at {args.size} px: {args.n / wall:.0f} images/s wall, "
              f"{args.n / cpu:.0f} images/s of CPU time")
    elif args.grid:
        from PIL import Image
        images, labels = render_batch(args.seed, args.n, size=args.size)
        rows = [np.concatenate([np.concatenate(list(images[i:i + 8]), 1),
                                np.concatenate(list(colorize(labels[i:i + 8])), 1)], 0)
                for i in range(0, args.n - args.n % 8, 8)]
        Image.fromarray(np.concatenate(rows, 0)).resize((8 * args.size * 2, len(rows) * 4 * args.size),
                                                        Image.NEAREST).save(args.grid)
    else:
        ap.print_help()
