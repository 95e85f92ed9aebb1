"""A dense network on jet-level observables: the high-level-feature tagger physicists compare with.

Its inputs are a per-entry input group ``(B, C)`` of observables such as the jet mass,
N-subjettiness, energy correlation ratios, girth, pT_D and the constituent multiplicity
(:mod:`hepnn.sim.substructure`); a deep tagger on the constituents must beat it to show that it
learns more than those observables carry.
"""

from __future__ import annotations

import torch
from torch import nn

from hepnn.nets.blocks import MLP
from hepnn.utils import validation as check


class HighLevelFeatureNet(nn.Module):
    """``layers`` dense layers of width ``hidden`` (activation and dropout) and a linear output.

    Input: ``features`` ``(B, in_features)`` (standardised by the loader); output ``(B, n_outputs)``.
    """

    def __init__(
        self,
        in_features: int,
        n_outputs: int,
        hidden: int = 64,
        layers: int = 3,
        dropout: float = 0.1,
        activation: str = "relu",
    ):
        super().__init__()
        check.positive_int(in_features, "model.net.in_features")
        check.positive_int(n_outputs, "model.net.n_outputs")
        check.positive_int(hidden, "model.net.hidden")
        check.non_negative_int(layers, "model.net.layers")
        check.dropout_rate(dropout, "model.net.dropout")
        self.mlp = MLP(in_features, [hidden] * layers, n_outputs, dropout, activation)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim != 2:
            raise ValueError(
                f"HighLevelFeatureNet takes (batch, features), got shape {tuple(features.shape)}"
            )
        return self.mlp(features)
