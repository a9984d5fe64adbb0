"""The Rewrite tab's event handlers: widget values in, ``core.rewrite`` / ``core.rules`` calls,
pictures and a new ``Session`` out.

Each handler shows a problem as a warning in its status line (or caption) and keeps its other
outputs: a raised gr.Error would cover each of them, whole galleries too, with an "Error" badge
(``warn_on_error``). Long jobs (a rewrite, key statistics) run under ``stoppable`` and stream
their progress into the status line.
"""
from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np

import core
from core import rewrite as rw
from core import rules
from core.eval.rewrite import measure_edits, region_concept
from core.generators.base import LayerError
from core.settings import MAX_RANK, model_settings
from demos.context import (DISPLAY_SIZE, AppContext, display, error_text, mapped, stoppable, warn,
                           warn_on_error)
from demos.rewrite_session import (STEPS, Session, box, measured_note, preset_note, preset_paths, shade,
                                   stroke_mask, to_float, to_u8)
from demos.stroke_canvas import StrokeCanvas

MAX_GALLERY = 32
TOP_RESULTS = 12
MAX_SEARCH = 2000
HELD_OUT = range(100_000, 100_016)   # a manual rewrite is measured on these (the presets: 100000-100199)
STATS_SAMPLES = 1000
NO_PRESETS = "(no presets for this model)"
HIGHLIGHT = np.array([255, 210, 0], np.float32)      # context-match highlight colour
GALLERY_SIZE = 256
TRAY_SIZE = 96
REPLAY_OUTPUTS = 7      # gallery, session, history, status, tray, layer, rank


class RewriteHandlers:
    """The handlers of one app's Rewrite tab; ``ctx`` gives models and their renderers."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.mem_stats: dict = {}     # (model name, layer) -> KeyStats computed in this process
        self.lock = threading.Lock()

    # ------------------------------------------------------------ checks and lookups
    def model(self, model_id):
        try:
            return self.ctx.model(model_id)
        except Exception as e:  # noqa: BLE001 - shown to the user
            raise gr.Error(f"Could not load model {model_id!r}: {error_text(e)}")

    @staticmethod
    def check_layer(model, layer):
        if layer not in model.layers:
            raise gr.Error(f"Layer {layer!r} is not in this model; use one of {', '.join(model.layers)}.")
        return layer

    @staticmethod
    def check_rank(rank):
        try:
            r = int(rank)
        except (TypeError, ValueError):
            r = None
        if r is None or r != rank or not 1 <= r <= MAX_RANK:
            raise gr.Error(f"Rank must be a whole number from 1 to {MAX_RANK}, got {rank!r}.")
        return r

    def known_stats(self, model, layer):
        """(key statistics of ``layer``, where they come from): the bundle's, else those computed
        here (the scratch folder; memory when that is not writable). Raises MissingStatsError."""
        if model.bundle.has_stats(layer):
            return rw.get_stats(model, layer), "shipped with the model"
        with self.lock:
            hit = self.mem_stats.get((model.name, layer))
        if hit is not None:
            return hit, "computed here, kept in memory"
        return rw.get_stats(model, layer, model.bundle.scratch(f"stats/{layer}.safetensors")), "computed here"

    def stats_for(self, model, layer):
        try:
            return self.known_stats(model, layer)[0]
        except rw.MissingStatsError:
            raise gr.Error(f"Layer {layer} has no key statistics yet. Open 'Statistics' below and "
                           f"press 'Compute statistics' ({STATS_SAMPLES} images), then try again.")
        except (rw.RewriteError, OSError) as e:
            raise gr.Error(f"Key statistics of {layer}: {error_text(e)}")

    @staticmethod
    def weight_deltas(st: Session, model):
        return st.shown_stack.weight_deltas(model) if st.shown_stack else None

    # ------------------------------------------------------------ pictures of a session
    def render(self, st: Session, numbers):
        if not numbers:
            return []
        images = self.ctx.renderer(st.model_id).render_numbers(list(numbers), st.shown_stack)
        return [core.images.to_uint8(im) for im in images]

    def gallery_of(self, st: Session, captions=None):
        tag = " (original)" if st.original and st.stack else ""
        return [(display(im, GALLERY_SIZE), (captions or {}).get(n, f"#{n}") + tag)
                for im, n in zip(self.render(st, st.numbers), st.numbers)]

    def tray_of(self, st: Session):
        return [(shade(self.render(st, [n])[0], m, TRAY_SIZE, inside=(255, 255, 255)), f"#{n}")
                for n, m in st.context]

    # ------------------------------------------------------------ gallery and canvas
    @warn_on_error(3, status=2)
    def show(self, model_id, spec, st):
        st = Session.of(st, model_id)
        try:
            st.numbers = list(core.parse_image_numbers(spec, max_count=MAX_GALLERY))
        except ValueError as e:
            raise gr.Error(f"Image numbers: {e}")
        return self.gallery_of(st), st, f"Showing {len(st.numbers)} image(s)."

    @warn_on_error(3, status=1)
    def select(self, model_id, st, evt: gr.SelectData):
        """A gallery click: that image onto the canvas."""
        st = Session.of(st, model_id)
        if evt.index is None or not 0 <= evt.index < len(st.numbers):
            raise gr.Error("Pick an image from the gallery.")
        return self.open_image(model_id, st, st.numbers[evt.index])

    @warn_on_error(3, status=1)
    def open_image(self, model_id, st, n):
        st = Session.of(st, model_id)
        try:
            n = core.parse_image_numbers(str(int(n)))[0]
        except (TypeError, ValueError) as e:
            raise gr.Error(f"Image number: {e}")
        st.current = n
        return StrokeCanvas.show(self.render(st, [n])[0]), f"Image **#{n}**: paint a region.", st

    def painted(self, model_id, strokes, st, what):
        """(session copy, model, the canvas's strokes as a uint8 mask); raises on an empty mask."""
        st = Session.of(st, model_id)
        if st.current is None:
            raise gr.Error("Pick an image from the gallery first, then paint on it.")
        model = self.model(model_id)
        mask = stroke_mask(strokes, model.resolution)
        if not mask.any():
            raise gr.Error(f"Empty {what} mask: paint a region on the image first.")
        return st, model, mask

    # ------------------------------------------------------------ context and search
    # add_context, copy and paste take the canvas's strokes (and clear them: StrokeCanvas.ack)
    @warn_on_error(4, status=2)
    def add_context(self, model_id, strokes, st):
        st, _, mask = self.painted(model_id, strokes, st, "context")
        st.context = st.context + [(st.current, mask)]
        return self.tray_of(st), st, f"Context: {len(st.context)} region(s).", StrokeCanvas.ack()

    @warn_on_error(3, status=2)
    def remove_context(self, model_id, st, evt: gr.SelectData):
        st = Session.of(st, model_id)
        if evt.index is None or not 0 <= evt.index < len(st.context):
            raise gr.Error("Pick a context thumbnail to remove it.")
        st.context = [c for i, c in enumerate(st.context) if i != evt.index]
        return self.tray_of(st), st, f"Context: {len(st.context)} region(s)."

    @warn_on_error(3, status=2)
    def clear_context(self, model_id, st):
        st = Session.of(st, model_id)
        st.context = []
        return [], st, "Context cleared."

    def direction(self, model, layer, st: Session):
        if not st.context:
            raise gr.Error("Empty context: paint a region on an image and press 'Add to context' first.")
        C = self.stats_for(model, layer)
        try:
            return rw.context_direction(model, layer, [(n, to_float(m)) for n, m in st.context],
                                        C, 1, self.weight_deltas(st, model))
        except (rw.RewriteError, ValueError, LayerError) as e:
            raise gr.Error(error_text(e))

    def matches(self, layer, st: Session, numbers, rank_them):
        """(the images shown, their gallery with the context match highlighted)."""
        model = self.model(st.model_id)
        self.check_layer(model, layer)
        d = self.direction(model, layer, st)
        try:
            res = rw.search(model, layer, d, numbers, weight_deltas=self.weight_deltas(st, model))
        except (rw.RewriteError, ValueError) as e:
            raise gr.Error(error_text(e))
        shown = res.ranking[:TOP_RESULTS] if rank_them else list(numbers)
        gallery = []
        for n, im in zip(shown, self.render(st, shown)):
            hl = to_u8(res.highlight(n, size=model.resolution).numpy())
            gallery.append((shade(im, hl, GALLERY_SIZE, inside=HIGHLIGHT), f"#{n} · {res.scores[n]:.2f}"))
        return shown, gallery

    @warn_on_error(3, status=2)
    def search(self, model_id, layer, spec, st):
        st = Session.of(st, model_id)
        try:
            numbers = core.parse_image_numbers(spec, max_count=MAX_SEARCH)
        except ValueError as e:
            raise gr.Error(f"Search image numbers: {e}")
        st.numbers, gallery = self.matches(layer, st, numbers, True)
        return gallery, st, f"Top {len(st.numbers)} of {len(numbers)} images by match with the context."

    @warn_on_error(3, status=2)
    def show_matches(self, model_id, layer, st):
        st = Session.of(st, model_id)
        if not st.numbers:
            raise gr.Error("Show some images first.")
        _, gallery = self.matches(layer, st, st.numbers, False)
        return gallery, st, "Highlighted: pixels above the 0.999 quantile of the context match."

    # ------------------------------------------------------------ copy and paste
    @warn_on_error(5, status=3)
    def copy(self, model_id, layer, strokes, st):
        st, model, mask = self.painted(model_id, strokes, st, "copy")
        self.check_layer(model, layer)
        try:
            rw.copy_value(model, layer, st.current, to_float(mask), self.weight_deltas(st, model))
        except (rw.RewriteError, ValueError) as e:
            raise gr.Error(error_text(e))
        st.copy, st.paste = (st.current, mask), None
        st.erase = False            # a copy starts a copy-paste request
        im = self.render(st, [st.current])[0]
        return (shade(im, mask, GALLERY_SIZE), None, st, f"Copied a region of image #{st.current}.",
                StrokeCanvas.ack())

    def paste_preview(self, layer, st: Session, n, mask):
        """Image ``n`` with the copied value pasted at ``mask``'s centre, its region boxed."""
        model = self.model(st.model_id)
        self.check_layer(model, layer)
        if st.copy is None:
            raise gr.Error("Nothing copied yet: paint a region and press 'Copy' first.")
        deltas = self.weight_deltas(st, model)
        try:
            clip = rw.copy_value(model, layer, st.copy[0], to_float(st.copy[1]), deltas)
            center = rw.paste_center(model, layer, to_float(mask))
            target, region = rw.paste_target(model, layer, n, clip, center, deltas)
            image = rw.render_with_value(model, layer, n, target, deltas)
        except (rw.RewriteError, ValueError, LayerError) as e:
            raise gr.Error(error_text(e))
        pic = np.asarray(display(core.images.to_uint8(image), DISPLAY_SIZE).convert("RGB"))
        return box(pic, region.cpu().numpy())

    @warn_on_error(4, status=2)
    def paste(self, model_id, layer, strokes, st):
        st, _, mask = self.painted(model_id, strokes, st, "paste")
        pic = self.paste_preview(layer, st, st.current, mask)
        st.paste = (st.current, mask)
        return pic, st, f"Pasted into image #{st.current}: press 'Execute change'.", StrokeCanvas.ack()

    @warn_on_error(3, status=2)
    def paste_at(self, model_id, layer, st, x, y):
        """Paste centred at (x, y) in model pixels on the paste image (or the current one)."""
        st = Session.of(st, model_id)
        model = self.model(model_id)
        self.check_layer(model, layer)
        n = st.paste[0] if st.paste else st.current
        if n is None:
            raise gr.Error("Pick the image to paste into first.")
        if st.copy is None:
            raise gr.Error("Nothing copied yet: paint a region and press 'Copy' first.")
        res = model.resolution
        try:
            x, y = float(x), float(y)
        except (TypeError, ValueError):
            raise gr.Error(f"Paste location must be two numbers, got ({x!r}, {y!r}).")
        if not (0 <= x < res and 0 <= y < res):
            raise gr.Error(f"Paste location ({x:g}, {y:g}) is outside the {res}x{res} image.")
        try:
            gh, gw = rw.copy_value(model, layer, st.copy[0], to_float(st.copy[1])).grid
        except (rw.RewriteError, ValueError) as e:
            raise gr.Error(error_text(e))
        # a mask covering the value-grid cell under (x, y): paste_center maps it back to that cell
        cy, cx = int(y * gh / res), int(x * gw / res)
        mask = np.zeros((res, res), np.uint8)
        mask[cy * res // gh:(cy + 1) * res // gh, cx * res // gw:(cx + 1) * res // gw] = 255
        pic = self.paste_preview(layer, st, n, mask)
        st.paste = (n, mask)
        return pic, st, f"Pasted into image #{n} at ({x:.0f}, {y:.0f}): press 'Execute change'."

    @warn_on_error(3, status=2)
    def paste_click(self, model_id, layer, st, evt: gr.SelectData):
        model = self.model(model_id)
        if evt.index is None or len(evt.index) != 2:
            raise gr.Error("Click on the paste image.")
        scale = model.resolution / DISPLAY_SIZE
        return self.paste_at(model_id, layer, st, evt.index[0] * scale, evt.index[1] * scale)

    # ------------------------------------------------------------ executing
    def run_rule(self, layer, rank, st: Session, rule, note=""):
        """Generator: apply ``rule`` on top of the session's edits; yields status tuples, returns
        (the new session, the fit's info)."""
        model = self.model(st.model_id)
        self.check_layer(model, layer)
        rank = self.check_rank(rank)
        if not rule.contexts:
            raise gr.Error("Empty context: paint a region on an image and press 'Add to context' first.")
        if not rule.erase and (rule.object is None or rule.paste is None):
            missing = " and ".join(f for f, v in (("copy", rule.object), ("paste", rule.paste)) if v is None)
            raise gr.Error(f"Nothing to rewrite yet: {missing} missing (use 'Copy' on one image and "
                           "'Paste' on another).")
        C = self.stats_for(model, layer)
        base = st.stack
        deltas = base.weight_deltas(model) if base else None
        info: dict = {}

        def job(stop, status):
            t0 = time.perf_counter()

            def progress(done, total, loss):
                status.update(done=done, total=total, loss=loss, t=time.perf_counter() - t0)
            return rules.apply_rule(model, rule, layer=layer, rank=rank, C=C, weight_deltas=deltas,
                                    progress=progress, stop=stop.is_set, info=info)

        def describe(s):
            loss = f", loss {s['loss']:.4g}" if s.get("loss") is not None else ""
            return (gr.skip(), gr.skip(), gr.skip(),
                    f"Rewriting {layer} (rank {rank}){note}… {s.get('done', 0)}/{s.get('total', '?')}{loss}")

        try:
            edit = yield from stoppable(job, describe)
        except (rules.RuleError, rw.RewriteError, ValueError, LayerError) as e:
            raise gr.Error(error_text(e))
        st = dataclasses.replace(st, stack=base.push(edit), original=False,
                                 erase=rule.erase,   # "Download rule JSON" saves an erase rule after an erase
                                 history=st.history + [[len(st.history) + 1, layer, rank,
                                                        round(float(info.get("seconds", 0.0)), 2), edit.label]])
        return st, info

    def finish(self, st: Session, info, what):
        loss = f"; loss {info['loss_before']:.4g} -> {info['loss']:.4g}" \
            if info.get("loss") is not None and info.get("loss_before") is not None else ""
        return (self.gallery_of(st), st, st.history_rows(),
                f"{what} in {info.get('seconds', 0):.2f} s{loss}. {len(st.stack)} edit(s) applied.")

    @warn_on_error(4, status=3)
    def execute(self, model_id, layer, rank, st, erase=False):
        st = Session.of(st, model_id)
        model = self.model(model_id)
        self.check_layer(model, layer)
        missing = st.missing(erase)
        if missing:
            raise gr.Error(f"Nothing to {'erase' if erase else 'rewrite'} yet: "
                           + "; ".join(STEPS[step] for step in missing)
                           + ". Or apply a preset (top of the tab) to see a rewrite at once.")
        before = st.stack
        st, info = yield from self.run_rule(layer, rank, st, st.rule(model, layer, self.check_rank(rank), erase))
        gallery, st, hist, msg = self.finish(st, info, "Erased the context" if erase else "Rewrote the model")
        yield gallery, st, hist, f"{msg}  \nMeasuring what else it changed on {len(HELD_OUT)} held-out samples…"
        note = self.side_effects(before, st, erase)
        yield gallery, st, hist, msg + (f"  \n{note}" if note else "")

    def erase(self, model_id, layer, rank, st):
        yield from self.execute(model_id, layer, rank, st, erase=True)

    def side_effects(self, before, st: Session, erase) -> str:
        """The newest rewrite against the model ``before`` it, on HELD_OUT samples, as the presets
        were measured: the concept the context shows turned into the copy's (or removed), and the
        mean change elsewhere; "" when the model has no segmenter."""
        loaded = self.ctx.get(st.model_id)
        model, seg = loaded.model, loaded.segmenter
        if seg is None:
            return ""
        base = before.weight_deltas(model) if before else None
        source = region_concept(model, seg, [(n, to_float(m)) for n, m in st.context], base)
        target = None if erase else region_concept(model, seg, [(st.copy[0], to_float(st.copy[1]))], base)
        m = measure_edits(model, seg, HELD_OUT, {"new": st.stack.weight_deltas(model)}, source, target,
                          base_deltas=base)["new"]
        return measured_note(m, seg.concepts[source], None if target is None else seg.concepts[target],
                             f"{len(HELD_OUT)} held-out samples")

    def replay(self, model_id, layer, rank, st, rule, what, note=""):
        """Generator: check a rule file against the model, put it into the session and apply it;
        its outputs include the tray and the rule's layer and rank."""
        if rule.contexts and (rule.object is None or rule.paste is None):
            # a file with a context and nothing to copy and paste: the original app's erase rules
            # (the rewriting paper's watermark and multikey ones)
            rule = dataclasses.replace(rule, erase=True)
        st = Session.of(st, model_id)
        model = self.model(model_id)
        if rule.model is not None and rule.model != model.bundle.name:
            raise gr.Error(f"This rule was made for model {rule.model!r}, not {model.bundle.name!r}.")
        layer = rule.layer or layer
        if layer not in model.layers:
            raise gr.Error(f"This rule is for layer {layer!r}, which this model does not have "
                           f"(layers: {', '.join(model.layers)}).")
        rank = self.check_rank(rule.rank if rule.rank is not None else rank)
        try:
            st.take_rule(rule, model.resolution)
        except rules.RuleError as e:
            raise gr.Error(error_text(e))
        st, info = yield from mapped(self.run_rule(layer, rank, st, rule, f" ({what})"),
                                     lambda out: out + (gr.skip(),) * (REPLAY_OUTPUTS - len(out)))
        gallery, st, hist, msg = self.finish(st, info, f"Applied {what}")
        yield gallery, st, hist, msg + (f"  \n{note}" if note else ""), self.tray_of(st), layer, rank

    @warn_on_error(REPLAY_OUTPUTS, status=3)
    def upload(self, model_id, layer, rank, file, st):
        if file is None:
            raise gr.Error("Choose a rule JSON file to upload.")
        path = file if isinstance(file, str) else getattr(file, "name", None) or file.get("path")
        try:
            rule = rules.read_rule(Path(path))
        except (rules.RuleError, OSError, ValueError) as e:
            raise gr.Error(f"Could not read the rule file: {error_text(e)}")
        yield from self.replay(model_id, layer, rank, st, rule, "the uploaded rule")

    @warn_on_error(REPLAY_OUTPUTS, status=3)
    def preset(self, model_id, layer, rank, name, st):
        model = self.model(model_id)
        paths = preset_paths(model)
        if name not in paths:
            raise gr.Error("This model has no presets." if not paths else f"Unknown preset {name!r}.")
        try:
            rule = rules.read_rule(paths[name])
        except (rules.RuleError, OSError, ValueError) as e:
            raise gr.Error(f"Preset {name!r} is broken: {error_text(e)}")
        yield from self.replay(model_id, layer, rank, st, rule, f"preset '{name}'", preset_note(model, name))

    @warn_on_error(2, status=1)
    def download(self, model_id, layer, rank, st):
        st = Session.of(st, model_id)
        model = self.model(model_id)
        self.check_layer(model, layer)
        if not (st.context or st.copy or st.paste):
            raise gr.Error("Nothing to save yet: add context, copy and paste first.")
        text = rules.write_rule(st.rule(model, layer, self.check_rank(rank), st.erase))
        path = Path(tempfile.mkdtemp(prefix="rewrite-rule-")) / f"{model.bundle.name}-{layer}-rule.json"
        path.write_text(text, encoding="utf-8")
        return str(path), f"Saved the rule as {path.name}."

    def edited(self, model_id, st):
        """What the Share panel shares: the session's rewrites."""
        st = Session.of(st, model_id)
        return self.model(model_id), st.stack, st.numbers[:2], "rewritten"

    @warn_on_error(3, status=2)
    def toggle(self, model_id, st):
        st = Session.of(st, model_id)
        st.original = not st.original
        what = "original model" if st.original else f"edited model ({len(st.stack)} edit(s))"
        return self.gallery_of(st), st, f"Showing the {what}."

    @warn_on_error(4, status=3)
    def undo(self, model_id, st):
        st = Session.of(st, model_id)
        if not st.stack:
            raise gr.Error("Nothing to undo.")
        st.stack, st.history, st.original = st.stack.undo(), st.history[:-1], False
        return self.gallery_of(st), st, st.history_rows(), f"Undone; {len(st.stack)} edit(s) left."

    # ------------------------------------------------------------ statistics
    @warn_on_error(1, status=0)
    def stats_info(self, model_id, layer):
        model = self.model(model_id)
        if layer not in model.layers:
            return ""
        try:
            stats, origin = self.known_stats(model, layer)
            return f"Key statistics of {layer}: {stats.meta.get('samples', '?')} images ({origin})."
        except rw.MissingStatsError:
            return (f"**{layer} has no key statistics yet.** Rewriting needs them: press "
                    f"'Compute statistics' ({STATS_SAMPLES} images).")
        except (rw.RewriteError, OSError) as e:
            return f"Key statistics of {layer}: {error_text(e)}"

    @warn_on_error(1, status=0)
    def compute_stats(self, model_id, layer, samples):
        model = self.model(model_id)
        self.check_layer(model, layer)
        samples = int(samples)
        if samples < 1:
            raise gr.Error("Use at least one image.")
        if model.bundle.has_stats(layer):
            yield warn(f"{layer} ships key statistics with the model; they are used as they are, "
                       "not recomputed here.")
            return

        def job(stop, status):
            return rw.collect_key_stats(model, layer, range(samples), stop=stop.is_set,
                                        progress=lambda d, t, _: status.update(done=d, total=t))

        try:
            stats = yield from stoppable(
                job, lambda s: f"Collecting key statistics of {layer}: {s.get('done', 0)}/{samples} images…")
        except (rw.RewriteError, ValueError) as e:
            raise gr.Error(error_text(e))
        try:      # never into the bundle: shipped files are read-only at run time
            rw.save_key_stats(stats, model.bundle.scratch(f"stats/{layer}.safetensors"))
            where = "saved in this server's cache"
        except OSError:
            with self.lock:
                self.mem_stats[(model.name, layer)] = stats
            where = "kept in memory (the cache folder is not writable)"
        yield f"Key statistics of {layer} over {stats.meta.get('samples')} images {where}."

    # ------------------------------------------------------------ another model
    @warn_on_error(5, status=4)
    def model_changed(self, model_id):
        """The picker opened another model: its layers, rank and presets."""
        model = self.model(model_id)
        names = list(preset_paths(model)) or [NO_PRESETS]
        settings = model_settings(model)
        return (gr.update(choices=list(model.layers), value=settings.rewrite_layer), settings.rewrite_rank,
                gr.update(choices=names, value=names[0]), gr.update(interactive=names != [NO_PRESETS]),
                gr.skip())
