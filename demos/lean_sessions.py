"""Two changes to Gradio 6.31's bookkeeping of sessions, which costs the server CPU on every page
open and every event, on the event loop that also serves the page's files:

- An output a function skips (``gr.skip()``) is answered as skipped without rebuilding its
  component: Gradio builds the component anew from its settings and recomputes its configuration
  (JSON schema included) for each one. The event that restores a page's view skips ~34 outputs
  (55-140 ms per page open); a live paint stroke skips 5.
- A session's copy of a component's configuration (Gradio keeps one per component, for its deep
  links) is made when first read or changed, not for all ~300 components when the session starts
  (~66 ms per visitor, and most of the ~0.3 MB Gradio keeps per session).

What the browser receives is unchanged. Measured (bench/README.md, session 14): server CPU per
page open 0.42 -> 0.31 s, per paint stroke 45 -> 27 ms. With another Gradio version nothing is
changed (the functions replaced here are Gradio's internals).
"""
from __future__ import annotations

import copy
import os

import gradio as gr
from gradio import blocks, state_holder

GRADIO = "6.31.0"                          # the version whose internals this replaces
SKIPPED = {"__type__": "update"}           # gr.skip(), as an output value and as Gradio answers it
_postprocess_data = blocks.Blocks.postprocess_data      # Gradio's own


def _skipped(value) -> bool:
    return isinstance(value, dict) and value == SKIPPED


async def postprocess_data(self, block_fn, predictions, state):
    """Gradio's ``Blocks.postprocess_data`` on the outputs not skipped; each skipped output is
    answered ``{"__type__": "update"}`` as Gradio answers it, without rebuilding its component.
    (Gradio's message for an output that fails to process then lists the outputs not skipped.)"""
    outputs = block_fn.outputs
    if len(outputs) > 1 and not block_fn.batch and not block_fn.is_validator_function:
        if _skipped(predictions):                 # one gr.skip() for every output
            predictions = [SKIPPED] * len(outputs)
        elif isinstance(predictions, dict) and predictions and all(isinstance(k, blocks.Block) for k in predictions):
            predictions = blocks.convert_component_dict_to_list(list(outputs), predictions)
        if isinstance(predictions, (list, tuple)) and len(predictions) == len(outputs):
            kept = [i for i, value in enumerate(predictions) if not _skipped(value)]
            if len(kept) < len(outputs):
                some = copy.copy(block_fn)        # the same event with the kept outputs only
                some.outputs = [outputs[i] for i in kept]
                values = [predictions[i] for i in kept]
                done = await _postprocess_data(self, some, values if len(kept) > 1 else values[0],
                                               state) if kept else []
                answer = [dict(SKIPPED) for _ in outputs]
                for i, value in zip(kept, done):
                    answer[i] = value
                return answer
    return await _postprocess_data(self, block_fn, predictions, state)


class ConfigsOnDemand(dict):
    """A session's ``config_values`` (block id -> its configuration), each made when first read."""

    def __init__(self, session: state_holder.SessionState):
        super().__init__()
        self.session = session

    def __missing__(self, key):
        config = self.session.blocks_config
        self[key] = made = config.config_for_block(key, [], config.blocks[key])
        return made

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or key in self.session.blocks_config.blocks


def _session_init(self, blocks_: gr.Blocks) -> None:
    """Gradio's ``SessionState.__init__`` without making every block's configuration upfront."""
    self.blocks_config = copy.copy(blocks_.default_config)
    self.config_values = ConfigsOnDemand(self)
    self.state_data = {}
    self._state_ttl = {}
    self.is_closed = False
    self.STATE_TTL_WHEN_CLOSED = 1 if os.getenv("GRADIO_IS_E2E_TEST", None) else 3600


def _session_components(self):
    """Every block's configuration (Gradio's deep-link route saves them): made where not yet."""
    for key in list(self.blocks_config.blocks):
        if config := self.config_values[key]:
            yield config


def use_lean_sessions() -> bool:
    """Install both changes (once; only on the Gradio version they were written for). Returns
    whether they are installed."""
    if gr.__version__ != GRADIO:
        return False
    blocks.Blocks.postprocess_data = postprocess_data
    state_holder.SessionState.__init__ = _session_init
    state_holder.SessionState.components = property(_session_components)
    return True
