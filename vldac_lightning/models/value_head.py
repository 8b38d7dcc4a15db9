"""The step critic: an MLP on the backbone's last prompt-token hidden state."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ValueHead(nn.Module):
    """V_φ(s_t) = MLP_φ(stopgrad(h(s_t))) — docs/algorithm.md#value-head.

    The ``detach`` lives inside ``forward``: the stop-gradient is structural, so no config flag
    can route value-loss gradients into the backbone (the reference code had such a flag and
    ignored it).
    """

    def __init__(self, in_features: int, hidden_sizes: Sequence[int] = (3072, 2048)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden_sizes:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [B, H] -> [B]
        return self.mlp(hidden.detach().float()).squeeze(-1)
