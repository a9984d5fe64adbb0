"""Photos: safe loading, inversion into the generator, image-specific adaptation, compositing.

The pipeline (ganseeing's: encoder start, latent + residual optimisation, then adaptation of
the fine layers; see ARCHITECTURE.md)::

    x = load_photo("upload.jpg", model.resolution)             # [1,3,R,R] in [-1, 1], or PhotoError
    inv = finish(invert(model, x, encoder=load_encoder(path), segmenter=seg))   # z + feature residual
    ada = finish(adapt(model, inv, x, segmenter=seg))           # dense ΔW on the fine layers only
    stack = EditStack(ada.edits).push(paint_edit(...))          # per-session edits, base untouched
    before, after = inv.render(model, EditStack(ada.edits)), inv.render(model, stack)
    out = composite(x, before, after)                           # the upload, edited region replaced

``invert`` and ``adapt`` are *generator functions*: they yield progress records (so a UI can stream
previews and a Stop button works) and the last record carries the result::

    {"stage": "invert" | "adapt", "step": i, "steps": n, "loss": float, "psnr": float,
     "preview": [1,3,R,R] tensor (CPU, clamped) or None, "done": bool, "stopped": bool,
     "result": InversionResult | AdaptResult | None}      # result only on the final record

``stop()`` (a callable) is checked every step; when it returns True the generator ends early with
the best iterate so far. ``progress(fraction, desc=...)`` (``gr.Progress``-compatible) is called at
every record. :func:`finish` runs such a generator to the end and returns the result.

Inversion (ICCV'19 "invert a layer"): start from the encoder's ``(z, features)`` when the bundle has
one, else from the best of ``starts`` seeded random z (scored by pixel loss); then Adam on z plus an
additive residual on one early layer's output (default: the bundle's paint layer), minimising
``L1 pixel + feature_weight * perceptual + residual_weight * mean(r^2)/mean(f^2)``. The perceptual
term compares the bundle segmenter's intermediate activations (ToySegNet ``enc2``/``enc3``) of the
render and of the photo (computed once); it is skipped when there is no segmenter.

Adaptation (GANPaint Studio): the latent and residual stay fixed; a dense ΔW per *fine* layer
(default: layers after the paint layer at >= 2x its resolution, e.g. layer7..layer10 of the 64-px
Toytown ProGAN, whose paint layer is the 16-px layer6) is fitted with the same losses plus
``penalty * sum ||ΔW||^2 / ||W||^2``. Coarse layers are untouched, so painted concepts keep their meaning. The result is a tuple of
``WeightEdit.full(layer, ΔW)``: a per-session edit. The output (toRGB) layer is not a named layer
and cannot be expressed as a WeightEdit, so it is never adapted.

Defaults, chosen on the 64-px Toytown GAN (10,647 steps) with 8 held-out renders, 2 CPU threads:
``invert(steps=150, lr=0.2, feature_weight=0.1, residual_weight=0.05, starts=16)`` then
``adapt(steps=300, lr=0.05, penalty=1)`` (10% warm-up) on layer7..layer10: median 30.3 dB after
inversion, 31.3 dB after adaptation, 13.4 s per photo, editability 0.84 (a tree stroke raises tree
pixels by 84% of what it does on samples). The penalty trades fidelity for editability: 0.3 gave
31.8 dB / 0.60, 0.01 33.0 dB / 0.09 (the fine layers then redraw the photo whatever the paint layer
says), no adaptation 28.3 dB / 0.85 on the four hardest. 600 steps added < 0.1 dB. The old default
(only the two 64-px layers, lr 0.005, penalty 10, 100 steps) added 0.1-0.2 dB: 2 x 16 channels
cannot fit a photo's detail.

A bundle sets its own penalty (``photo_penalty`` in config.json, :mod:`core.settings`). Toytown 2
uses 3, chosen on 8 renders of seed 1002 (not the evaluation's seed 1001): penalty 1 gave 34.1 dB /
editability 0.63, 3 gave 33.8 dB / 0.72, 10 gave 33.5 dB / 0.72 (no adaptation left). Toytown 2
inverts to 33.5 dB already, so adaptation matters less than it did.
"""
from .composite import composite, edit_mask
from .files import MAX_BYTES, MAX_PIXELS, MIN_SIDE, PhotoError, crop_resize, load_photo, open_photo
from .fit import (AdaptResult, InversionResult, PhotoLoss, adapt, default_fine_layers, finish,
                  invert, psnr, segmenter_features)

__all__ = ["PhotoError", "load_photo", "open_photo", "crop_resize", "invert", "adapt", "finish",
           "composite", "edit_mask", "InversionResult", "AdaptResult", "PhotoLoss", "psnr",
           "default_fine_layers", "segmenter_features",
           "MAX_BYTES", "MAX_PIXELS", "MIN_SIDE"]
