"""The step critic: an MLP on the backbone's last prompt-token hidden state."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ValueHead(nn.Module):
    """V_φ(s_t) = MLP_φ(stopgrad(h(s_t))) — docs/algorithm.md#value-head.

    The ``detach`` lives inside ``forward``, so the value loss cannot reach the backbone unless the
    head is built with ``stop_grad=False`` — only the RL4VLM baseline does that (its value loss
    trains the LoRA weights too; the reference code had a stop-grad flag and ignored it).
    """

    def __init__(self, in_features: int, hidden_sizes: Sequence[int] = (3072, 2048), *, stop_grad: bool = True) -> None:
        super().__init__()
        self.stop_grad = stop_grad
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden_sizes:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [B, H] -> [B]
        if self.stop_grad:
            hidden = hidden.detach()
        return self.mlp(hidden.float()).squeeze(-1)
