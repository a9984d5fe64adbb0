"""training.toytown: the rendered data is pinned bit for bit (the GAN and the segmenter of the
default bundle are trained on it), a scene is a function of its latent, and its parts read fixed
slots of that latent.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from training.toytown import (CLASSES, GLOBAL_SLOTS, N_SLOTS, WATERMARK, WATERMARK_RATE, Z_DIM, colorize,
                              latents, render_batch, render_latents)

# (seed, n, start, size) -> (sha256 of images.tobytes(), sha256 of labels.tobytes()).
# Seed 0 images 0..15 include watermarks (5, 15); the other sizes clip shapes at the edges
# differently.
GOLDEN = {
    (0, 16, 0, 64): ("3fd77687a4dcef24361077434d98c80ca674cc012aea541fe5f323d998fcbdc0",
                     "d75b8f8d237896930fcc44e55788b5d0b2d2672461836c9f198d7bf402de6905"),
    (1, 16, 100, 64): ("fa08e78794fe0d5ba117338756bb91db0d1b4acf5bae74d394389214a491ca08",
                       "997d99b1f0fd40d96253f59eb3ab37e29b7f50ed5329c703c8142d755bdfda73"),
    (2024, 4, 5000, 48): ("1ad4beebbd47e0dfbdead08b06f27eeb8e9e9187e54bd1ae1a7c141e58a1fc7c",
                          "4a24b19bc8e9c28d86e552d2db756d95a291cab619c0ba3d8fd76e0512c67eb5"),
    (777, 2, 0, 192): ("1182b862d8e2ac934f1e8f9f02a8a677390f3775a83beb41f5180748013a0728",
                       "8f0eaf61047429cb55ce62bd19460ab78286402db9c449c8667551e396ef2729"),
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


def test_scene_depends_only_on_seed_and_index_and_is_a_function_of_its_latent():
    images, labels = render_batch(5, 6, start=10)
    again, again_labels = render_batch(5, 2, start=13)
    np.testing.assert_array_equal(images[3:5], again)
    np.testing.assert_array_equal(labels[3:5], again_labels)
    z = latents(5, 6, start=10)
    assert z.shape == (6, Z_DIM) and z.dtype == np.float32 and N_SLOTS <= Z_DIM
    from_z, from_z_labels = render_latents(z)
    np.testing.assert_array_equal(from_z, images)
    np.testing.assert_array_equal(from_z_labels, labels)


def test_slots_are_fixed_the_watermark_slot_changes_only_the_watermark():
    z = latents(0, 8)
    clean, marked = z.copy(), z.copy()
    mark_slot = GLOBAL_SLOTS - 1
    clean[:, mark_slot] = 3.0      # Phi(3) = 0.999: never watermarked
    marked[:, mark_slot] = -3.0    # Phi(-3) = 0.001: the word alone
    a, la = render_latents(clean)
    b, lb = render_latents(marked)
    assert not (la == WATERMARK).any() and (lb == WATERMARK).any(axis=(1, 2)).all()
    np.testing.assert_array_equal(a[lb != WATERMARK], b[lb != WATERMARK])
    np.testing.assert_array_equal(la[lb != WATERMARK], lb[lb != WATERMARK])


def test_labels_and_watermark_rate():
    images, labels = render_batch(0, 400)
    assert labels.max() < len(CLASSES) and colorize(labels[:2]).shape == (2, 64, 64, 3)
    rate = (labels == WATERMARK).any(axis=(1, 2)).mean()
    assert abs(rate - WATERMARK_RATE) < 0.05
    for concept in ("spire", "dome", "tree", "door", "window"):  # every concept is common
        assert (labels == CLASSES.index(concept)).any(axis=(1, 2)).mean() > 0.3, concept
