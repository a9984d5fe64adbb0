"""Painting with Neurons: run the demo app on the embedded default model.

    python app.py            # http://127.0.0.1:7860
"""
import os

from demos import build_app
from demos.settings import LAUNCH, QUEUE

if __name__ == "__main__":
    demo = build_app()
    demo.queue(**QUEUE).launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), **LAUNCH)
