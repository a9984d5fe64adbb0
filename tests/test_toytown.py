"""training.toytown: the rendered data is pinned bit for bit (the GAN and the segmenter of the
default bundle were trained on it), and an image depends only on (seed, index).

The golden hashes below were computed with the renderer as it was before it was optimised
(commit 50a227c); any change to the pixels or labels of any scene fails here.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from training.toytown import CLASSES, WATERMARK, colorize, render_batch, render_scene

# (seed, n, start, size) -> (sha256 of images.tobytes(), sha256 of labels.tobytes()).
# Seed 0 images 0..15 include all three watermark kinds (bar: 1, word: 3, both: 13); the other
# sizes exercise the clipping of shapes at the canvas edges differently.
GOLDEN = {
    (0, 16, 0, 64): ("6be343decd2305f0cdf208e648a24dbec2aa1e9cf2172405c430937338b9e238",
                     "a84d6cabebc3a19027cabd1e630aa8eab5ce69886a6cb2d9be23e6c24b598e0a"),
    (1, 16, 100, 64): ("57d63c3935e8fd1c2646a69deed79985bb31338cffd3800468f87db259d5b54c",
                       "3bfd5bad76290c92dde7b980f03a11a2729a20298c19b334a922f14839d55a60"),
    (2024, 4, 5000, 48): ("cd567f4dd9e82dbda6621b8f4e4446b3e1b4b8e4c05070ec17b6c43244eee27b",
                          "3d3e7551254fc8b0ccad85fac811fdb75d024c21c78defdca3b50ea72abd668a"),
    (777, 2, 0, 192): ("6550588d8dcb95dcfa8a39d993696c79461983820d95b2bff07cc653b82e8aa5",
                       "1258f72865d12cb2075065cd37129c038eb3c6dc1d650bcef136332d25db948b"),
}


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("args", list(GOLDEN))
def test_golden_hashes(args):
    seed, n, start, size = args
    images, labels = render_batch(seed, n, start, size)
    assert images.shape == (n, size, size, 3) and images.dtype == np.uint8
    assert labels.shape == (n, size, size) and labels.dtype == np.uint8
    assert (_sha(images), _sha(labels)) == GOLDEN[args]


def test_image_depends_only_on_seed_and_index():
    images, labels = render_batch(5, 6, start=10)
    again, again_labels = render_batch(5, 2, start=13)
    np.testing.assert_array_equal(images[3:5], again)
    np.testing.assert_array_equal(labels[3:5], again_labels)
    img, lab = render_scene(np.random.RandomState([5, 12]))
    assert img.flags.c_contiguous and img.dtype == np.uint8 and lab.dtype == np.uint8
    np.testing.assert_array_equal(img, images[2])
    np.testing.assert_array_equal(lab, labels[2])


def test_labels_and_watermarks():
    images, labels = render_batch(0, 16)
    assert labels.max() < len(CLASSES)
    marked = [i for i in range(16) if (labels[i] == WATERMARK).any()]
    assert marked == [1, 3, 13]
    assert colorize(labels).shape == (16, 64, 64, 3)
