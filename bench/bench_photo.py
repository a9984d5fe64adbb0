"""Photo editing on the default model: inversion + image-specific adaptation of fresh Toytown renders
(seed 1001, never used in training), as the Photo tab runs them; the same code as
``python -m core eval photo`` (which also takes folders of real photographs)."""
from core.eval.photo import evaluate_photos

from bench import row


def run(quick: bool = False) -> list[dict]:
    import core
    from core.segmenter import load_segmenter
    from training.toytown import render_batch
    model = core.load_model("default")
    seg = load_segmenter(model.bundle.path)
    photos, _ = render_batch(1001, 2 if quick else 8, size=model.resolution)
    res = evaluate_photos(model, seg, list(photos))
    med, n = res["median"], len(res["rows"])
    per = ", ".join(f"{r['psnr_adapted']:.1f}" for r in res["rows"])
    return [row("photo", "PSNR after inversion", med["psnr_inversion"], "dB", f"median of {n}"),
            row("photo", "PSNR after adaptation", med["psnr_adapted"], "dB",
                f"median of {n} ({per}); target >= 30 dB"),
            row("photo", "seconds per photo", med["seconds"], "s",
                "inversion + adaptation; target <= 30 s"),
            row("photo", "editability", med["editability"], "",
                "tree stroke rise on the adapted photo / on samples; target >= 0.7")]
