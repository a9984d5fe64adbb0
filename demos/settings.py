"""Serving limits, chosen deliberately for a 2-vCPU Space (see README "Deploying")."""
import gradio as gr

# Requests wait in one queue; more than this many waiting get a clear "queue is full" message.
QUEUE = {"max_size": 32, "default_concurrency_limit": 2}
# Uploads beyond this size are rejected by the server before they reach our code.
MAX_FILE_SIZE = "10mb"
LAUNCH = {"max_file_size": MAX_FILE_SIZE, "theme": gr.themes.Soft(), "footer_links": ["api", "gradio"]}
