"""Evaluate a rewrite: our update against the original method, on held-out images.

``evaluate_rewrite(model, segmenter, rule, image_numbers)`` runs the rule twice from the same
context direction and paste target — ``"ours"`` (closed form on ProGAN; Levenberg–Marquardt on Λ on StyleGAN2)
and ``"original"`` (Adam on the full weight, 2,001 steps, projection every 10) — renders every
image clean and edited, segments both and reports per method (protocol after sec 5.1 of the
paper, davidbau/rewriting):

- ``effectiveness``: share of source-concept pixels (in the clean images) that the segmenter labels
  target-concept after the edit;
- ``generality``: share of images containing the source concept that gain target-concept pixels
  inside their source region;
- ``collateral_clean``: mean |Δpixel| over images without the source concept;
- ``collateral_outside``: mean |Δpixel| outside the source regions (all images);
- ``removal``: share of source-concept pixels no longer labelled source after the edit;
- ``rate_before`` / ``rate_after``: share of images with >= 0.5% source-concept pixels;
- ``seconds``: wall time of the weight update alone.

An erase rule (``"erase": true``) has no target: it is judged by ``removal`` and the rates (name
the concept it removes, e.g. ``--source-concept watermark``); effectiveness and generality are None.

``measure_edits`` measures edits made already (the app's Rewrite tab: a manual rewrite against
the model before it) and ``region_concept`` names what a context shows.

|Δpixel| is the absolute RGB difference in [0, 1] units (1 = 255 levels), averaged over channels.

CLI (registered by the ``eval`` dispatcher, core/cli/eval.py, through :func:`add_eval_parser`)::

    python -m core eval rewrite SOURCE RULE [--images 100000-100199] [--out FILE.json]

RULE is a rule JSON file or the name of a bundle preset (``default spires_to_trees``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..model import generator_of, sampling_options

DEFAULT_IMAGES = "100000-100199"
METHOD_NAMES = {"ours": "closed_form", "original": "original"}


def _concept(segmenter, name: str) -> int:
    if hasattr(segmenter, "concept_index"):
        return segmenter.concept_index(name)
    concepts = list(getattr(segmenter, "concepts", []))
    if name not in concepts:
        raise ValueError(f"unknown concept {name!r}; the segmenter knows {', '.join(concepts)}")
    return concepts.index(name)


RATE_SHARE = 0.005  # an image "shows" a concept from this pixel share on


def evaluate_rewrite(model, segmenter, rule, image_numbers, source_concept: str | None = None,
                     target_concept: str = "tree", layer: str | None = None,
                     rank: int | None = None, C=None, methods=("ours", "original"),
                     niter_original: int | None = None, batch_size: int = 16,
                     progress=None) -> dict:
    """Apply ``rule`` with each method in ``methods`` ("ours", "original") and measure it on
    ``image_numbers`` (see the module docstring). Returns ``{method: {effectiveness, generality,
    collateral_clean, collateral_outside, removal, rate_before, rate_after, seconds, loss_before,
    loss, images, images_with_source, source_pixels}}``. ``source_concept`` defaults to "spire"
    for a copy-paste rule; an erase rule must name it. ``niter_original`` shortens the original
    method (for tests); ``progress(done, total, None)`` counts rendered batches."""
    from .. import rewrite as rw
    from ..images import parse_image_numbers
    from ..rules import Rule, _check_settings, apply_rule, read_rule

    if not isinstance(rule, Rule):
        rule = read_rule(rule)
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown or not methods:
        raise ValueError(f"unknown methods {unknown}; use {', '.join(METHOD_NAMES)}")
    numbers = list(parse_image_numbers(image_numbers))
    if not numbers:
        raise ValueError("no image numbers to evaluate on")
    if source_concept is None:
        if rule.erase:
            raise ValueError("an erase rule has no target: name the concept it removes "
                             "(source_concept, e.g. 'watermark')")
        source_concept = "spire"
    src_i, tgt_i = _concept(segmenter, source_concept), _concept(segmenter, target_concept)
    g, layer, rank = _check_settings(model, rule, layer, rank)
    if not rule.erase and (rule.object is None or rule.paste is None):
        raise ValueError("the rule needs an 'object' and a 'paste' selection to be evaluated")
    if C is None:
        C = rw.get_stats(model, layer)

    deltas, results = {}, {}
    for name in methods:
        info = {}
        kw = {"niter": niter_original} if name == "original" and niter_original else {}
        edit = apply_rule(model, rule, layer, rank, method=METHOD_NAMES[name], C=C, info=info, **kw)
        deltas[name] = {layer: rw.edit_delta(edit).to(g.main_weight(layer))}
        results[name] = {"method": info["method"], "seconds": info["seconds"],
                         "loss_before": info.get("loss_before"), "loss": info.get("loss")}
    measured = measure_edits(model, segmenter, numbers, deltas, src_i, None if rule.erase else tgt_i,
                             batch_size=batch_size, progress=progress)
    return {name: {**results[name], **measured[name]} for name in methods}


def measure_edits(model, segmenter, image_numbers, deltas: dict, source: int, target: int | None,
                  base_deltas=None, batch_size: int = 16, progress=None) -> dict:
    """Measure edited models against the model before the edits on ``image_numbers`` (see the
    module docstring): ``deltas`` maps a name to the ``weight_deltas`` of an edited model,
    ``base_deltas`` are those of the model before (None: the plain model); ``source`` and
    ``target`` are concept indices of ``segmenter`` (``target`` None, as for an erase rule: no
    effectiveness or generality). Returns ``{name: {effectiveness, generality, removal,
    rate_before, rate_after, collateral_clean, collateral_outside, images, images_with_source,
    source_pixels}}``; a ratio without cases (e.g. collateral_clean when every image shows the
    source) is None."""
    from ..images import parse_image_numbers

    g, (truncation, noise) = generator_of(model), sampling_options(model)
    numbers = list(parse_image_numbers(image_numbers))
    acc = {name: dict(src=0, hit=0, removed=0, imgs_src=0, gained=0, clean_sum=0.0, clean_n=0,
                      out_sum=0.0, out_n=0, shown_before=0, shown_after=0) for name in deltas}
    bs = max(1, int(batch_size))
    total = (len(numbers) + bs - 1) // bs
    with torch.no_grad():
        for b, s in enumerate(range(0, len(numbers), bs)):
            z = g.sample_z(numbers[s:s + bs])
            clean = g.generate(z, truncation=truncation, noise=noise,
                               weight_deltas=base_deltas).float().cpu()
            seg0 = segmenter.segment(clean).cpu()
            src = seg0 == source                                          # [N, H, W]
            has_src = src.flatten(1).any(1)
            for name in deltas:
                edited = g.generate(z, truncation=truncation, noise=noise,
                                    weight_deltas=deltas[name]).float().cpu()
                seg1 = segmenter.segment(edited).cpu()
                diff = (edited - clean).abs().mean(1) / 2                    # [N, H, W], [0, 1] units
                a = acc[name]
                a["src"] += int(src.sum())
                if target is not None:
                    tgt1 = seg1 == target
                    a["hit"] += int((src & tgt1).sum())
                    gained = ((src & tgt1 & (seg0 != target)).flatten(1).sum(1) > 0) & has_src
                    a["gained"] += int(gained.sum())
                a["removed"] += int((src & (seg1 != source)).sum())
                a["shown_before"] += int((src.flatten(1).float().mean(1) >= RATE_SHARE).sum())
                a["shown_after"] += int(((seg1 == source).flatten(1).float().mean(1) >= RATE_SHARE).sum())
                a["imgs_src"] += int(has_src.sum())
                if bool((~has_src).any()):
                    a["clean_sum"] += float(diff[~has_src].sum())
                    a["clean_n"] += int(diff[~has_src].numel())
                a["out_sum"] += float(diff[~src].sum())
                a["out_n"] += int((~src).sum())
            if progress is not None:
                progress(b + 1, total, None)

    def ratio(x, n):
        return float(x) / n if n else None

    results = {}
    for name, a in acc.items():
        results[name] = dict(
            effectiveness=None if target is None else ratio(a["hit"], a["src"]),
            generality=None if target is None else ratio(a["gained"], a["imgs_src"]),
            removal=ratio(a["removed"], a["src"]), rate_before=ratio(a["shown_before"], len(numbers)),
            rate_after=ratio(a["shown_after"], len(numbers)),
            collateral_clean=ratio(a["clean_sum"], a["clean_n"]),
            collateral_outside=ratio(a["out_sum"], a["out_n"]), images=len(numbers),
            images_with_source=a["imgs_src"], source_pixels=a["src"])
    return results


def region_concept(model, segmenter, regions, weight_deltas=None) -> int:
    """The concept (index of ``segmenter``) seen most inside ``regions``, (image number, [H, W]
    mask in [0, 1]) pairs such as a rule's context, on the model with ``weight_deltas``."""
    g, (truncation, noise) = generator_of(model), sampling_options(model)
    with torch.no_grad():
        images = g.generate(g.sample_z([n for n, _ in regions]), truncation=truncation, noise=noise,
                            weight_deltas=weight_deltas).float()
        labels = segmenter.segment(images).cpu()
    inside = torch.stack([torch.as_tensor(m) > 0 for _, m in regions])
    return int(torch.bincount(labels[inside], minlength=len(segmenter.concepts)).argmax())


# ------------------------------------------------------------------------------- CLI
def _main(args) -> int:
    from .. import load_model
    from ..segmenter import load_segmenter

    model = load_model(args.source, device=args.device)
    seg = load_segmenter(model.bundle.path) if model.bundle.path is not None else None
    if seg is None:
        raise ValueError(f"{args.source}: the bundle has no segmenter (segmenter.json), which the "
                         "evaluation needs")
    rule = Path(args.rule)
    preset = Path(model.bundle.path) / "rules" / f"{args.rule}.json"
    if not rule.is_file() and preset.is_file():     # a preset name, e.g. spires_to_trees
        rule = preset
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bar = None
    try:
        from tqdm import tqdm
        bar = tqdm(desc="evaluating", unit="batch")
    except ImportError:
        pass

    def progress(done, total, _):
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    t0 = time.perf_counter()
    out = evaluate_rewrite(model, seg, rule, args.images, args.source_concept,
                           args.target_concept, layer=args.layer, rank=args.rank, methods=methods,
                           niter_original=args.niter, batch_size=args.batch_size, progress=progress)
    if bar is not None:
        bar.close()
    print(f"{'method':10} {'effect.':>8} {'general.':>8} {'removal':>8} {'rate':>11} "
          f"{'coll.clean':>10} {'coll.out':>9} {'seconds':>8}")
    for name, r in out.items():
        def f(v, w, p=3):
            return f"{v:{w}.{p}f}" if v is not None else f"{'n/a':>{w}}"
        rate = f"{r['rate_before']:.2f}->{r['rate_after']:.2f}"
        print(f"{name:10} {f(r['effectiveness'], 8)} {f(r['generality'], 8)} {f(r['removal'], 8)} "
              f"{rate:>11} {f(r['collateral_clean'], 10, 4)} {f(r['collateral_outside'], 9, 4)} "
              f"{f(r['seconds'], 8, 2)}")
    if args.out:
        try:                  # the rule as the reader would name it, not this machine's path
            shown = str(rule.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            shown = str(rule)
        doc = {"model": model.name, "rule": shown, "images": args.images,
               "source_concept": args.source_concept, "target_concept": args.target_concept,
               "total_seconds": time.perf_counter() - t0, "results": out}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


def add_eval_parser(subparsers) -> None:
    """Register ``rewrite`` under ``python -m core eval``."""
    p = subparsers.add_parser("rewrite", help="rewriting: our update vs the original method",
                              description="Apply a rule file with our update and with the "
                              "original method; report effectiveness, generality, collateral "
                              "change and update time on held-out images.")
    p.add_argument("source", help="bundle folder (with stats/ and a segmenter) or 'default'")
    p.add_argument("rule", help="rule JSON file, or the name of one of the bundle's presets "
                   "(rules/<name>.json, e.g. spires_to_trees)")
    p.add_argument("--images", default=DEFAULT_IMAGES,
                   help=f"image numbers to evaluate on (default {DEFAULT_IMAGES})")
    p.add_argument("--out", default=None, help="write the results to this JSON file")
    p.add_argument("--layer", default=None, help="layer (default: the rule's)")
    p.add_argument("--rank", type=int, default=None, help="rank (default: the rule's, else 1)")
    p.add_argument("--source-concept", default=None,
                   help="the concept the rule changes (default spire; an erase rule must name it)")
    p.add_argument("--target-concept", default="tree")
    p.add_argument("--methods", default="ours,original", help="comma list of ours,original")
    p.add_argument("--niter", type=int, default=None,
                   help="steps of the original method (default 2001)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.set_defaults(run=_main)


__all__ = ["evaluate_rewrite", "measure_edits", "region_concept", "add_eval_parser", "DEFAULT_IMAGES"]
