"""Painting with Neurons: run the demo app on the embedded default model.

    python app.py                                   # http://127.0.0.1:7860
    python app.py --models stylegan2-church,org/name  # also open these at start-up (for a Space:
                                                    # or set PWN_MODELS to the same list)
"""
import argparse
import os

from demos import build_app
from demos.context import AppContext
from demos.settings import QUEUE, launch_options, use_torch_threads

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=os.environ.get("PWN_MODELS", ""),
                   help="comma-separated known ids or Hub ids to open at start-up, in the "
                        "background (default: $PWN_MODELS)")
    args = p.parse_args()
    preload = tuple(m.strip() for m in args.models.split(",") if m.strip())
    use_torch_threads()
    demo = build_app(AppContext(preload=preload))
    demo.queue(**QUEUE).launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), **launch_options())
