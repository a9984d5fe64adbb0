"""The one optimiser of the engine: Adam as ``torch.optim.Adam`` computes it with its defaults
(bias-corrected, no weight decay), over a few tensors with a learning rate per step.

Written out because the first ``torch.optim`` step in a process imports ``torch._dynamo``, which
costs from several seconds to a minute on a small, busy CPU: too slow for an interactive edit."""
from __future__ import annotations

import math
from typing import Sequence

import torch


class Adam:
    def __init__(self, params: Sequence[torch.Tensor], betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor], lr: float | Sequence[float]) -> None:
        """One update; ``lr`` is one rate for every tensor or one per tensor."""
        self.t += 1
        lrs = [lr] * len(self.params) if isinstance(lr, (int, float)) else list(lr)
        bc1, bc2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for p, g, m, v, rate in zip(self.params, grads, self.m, self.v, lrs):
            m.lerp_(g, 1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            p.addcdiv_(m, (v.sqrt() / math.sqrt(bc2)).add_(self.eps), value=-rate / bc1)
