"""Many-to-one LSTM / GRU taggers over padded, ordered collections (particles in a jet, jets in an event).

The collection is a padded tensor ``(B, C, P)`` with a mask ``(B, P)`` (True for real
elements). The elements are read as a sequence in the order the data config chose (e.g. by
decreasing pT); an optional per-particle front end of 1x1 convolutions first maps every element
to a learned representation (the CMS DeepJet pattern: CMS-DP-2017-005, Bols et al., JINST 15
(2020) P12012), then a (bidirectional, multi-layer) LSTM (Hochreiter & Schmidhuber 1997) or GRU
(Cho et al. 2014) reads the sequence and a dense head maps its final state to the logits. See
Guest et al., "Jet flavor classification in high-energy physics with deep neural networks",
Phys. Rev. D 94 (2016) 112002, and Egan et al., "Long short-term memory (LSTM) networks with
jet constituents for boosted top tagging at the LHC", arXiv:1711.09059.

Padding is never learned from, without packed sequences (which do not export to ONNX):

1. padded values are zeroed and the real elements are gathered to the front, keeping their
   order (so any mask works, not only left-aligned ones);
2. the forward direction runs over the whole padded sequence and is read at the last real
   position ``n - 1``: a causal recurrence there has seen exactly the ``n`` real elements;
3. the backward direction runs a forward recurrence over the sequence whose real part is
   reversed in place (position ``j < n`` takes element ``n - 1 - j``, padding stays after
   it), read at ``n - 1`` as well; for a further layer its outputs are reversed back so both
   directions' per-position outputs are aligned and concatenated.

Padded positions only ever influence padded positions, so the result does not depend on the
padding length or values. Everything is made of tensor ops (cumsum, scatter, gather,
comparisons) without Python loops over the batch, so ``torch.jit.trace`` and ONNX export keep
the batch and sequence axes dynamic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hepnn.nets.blocks import MLP, PerParticleNet, is_exporting
from hepnn.utils import validation as check

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


def left_align(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the real elements of ``x`` ``(B, C, P)`` to the front, in their order; zero the rest.

    Returns the aligned ``(B, C, P)`` tensor and the number of real elements ``n`` ``(B,)``.
    The real elements keep their relative order (a stable partition), the padded positions
    ``j >= n`` hold zeros.
    """
    real = mask.long()
    n = real.sum(dim=1)
    # destination of every element: real ones to 0..n-1 in order, padded ones to n..P-1
    destination = torch.where(mask, real.cumsum(dim=1) - 1, n.unsqueeze(1) + (1 - real).cumsum(dim=1) - 1)
    positions = torch.ones_like(real).cumsum(dim=1) - 1  # arange(P) per row, traced dynamically
    source = torch.zeros_like(real).scatter(1, destination, positions)
    aligned = torch.where(mask.unsqueeze(1), x, torch.zeros_like(x))
    aligned = aligned.gather(2, source.unsqueeze(1).expand_as(x))
    return aligned, n


def reverse_real(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Reverse the first ``n`` positions of every sequence of ``x`` ``(B, P, F)``; leave the rest.

    Position ``j < n`` takes element ``n - 1 - j``; positions ``j >= n`` are unchanged. The
    operation is its own inverse.
    """
    positions = torch.ones_like(x[:, :, 0], dtype=torch.long).cumsum(dim=1) - 1
    count = n.unsqueeze(1)
    index = torch.where(positions < count, count - 1 - positions, positions)
    return x.gather(1, index.unsqueeze(2).expand_as(x))


class JetSequenceRNN(nn.Module):
    """[per-particle 1x1 convs] -> (bi)LSTM/GRU over the real elements -> dense head.

    Input: ``particles`` ``(B, in_channels, P)`` and ``mask`` ``(B, P)`` (True for real
    elements, in any positions; their order is the sequence order); output ``(B, n_outputs)``.

    ``cell`` is ``"lstm"`` or ``"gru"``, with ``layers`` recurrent layers of ``hidden`` units
    (per direction) and ``dropout`` between them; ``bidirectional`` adds a backward direction
    per layer. ``front_end`` (a list of widths, or null) is a
    :class:`~hepnn.nets.blocks.PerParticleNet` applied to every element first (to the real ones
    only in eager mode; to every slot with ``dense_front_end``, or while exporting). The head is a
    :class:`~hepnn.nets.blocks.MLP` with hidden widths ``head`` and dropout ``head_dropout`` on
    the last layer's outputs at the end of the sequence (forward direction: after the last
    real element; backward direction: after the first). A collection with no element gives
    the head applied to zeros.

    With ``per_element`` (many-to-many, ``return_sequences``) the head is applied to every
    element's output instead, both directions at that element concatenated (the forward one has
    read the elements up to it, the backward one those from it to the end), and the output is
    ``(B, n_outputs, P)`` at the elements' own positions, zero at the padded ones.
    """

    def __init__(
        self,
        in_channels: int,
        n_outputs: int,
        cell: str = "lstm",
        hidden: int = 64,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        front_end: Sequence[int] | None = None,
        head: Sequence[int] = (64,),
        head_dropout: float = 0.0,
        activation: str = "relu",
        dense_front_end: bool = False,
        per_element: bool = False,
    ):
        super().__init__()
        check.choice(cell, "cell", sorted(CELLS))
        self.per_element = check.boolean(per_element, "per_element")
        sizes = {"in_channels": in_channels, "n_outputs": n_outputs, "hidden": hidden, "layers": layers}
        for key, value in sizes.items():
            check.positive_int(value, key)
        for key, value in {"dropout": dropout, "head_dropout": head_dropout}.items():
            check.dropout_rate(value, key)
        widths = [check.positive_int(w, f"front_end[{i}]") for i, w in enumerate(front_end or ())]
        check.boolean(dense_front_end, "dense_front_end")

        self.cell = cell
        self.bidirectional = bool(bidirectional)
        self.front_end: PerParticleNet | None = None
        features = in_channels
        if widths:
            self.front_end = PerParticleNet(in_channels, widths, activation, dense=dense_front_end)
            features = self.front_end.out_channels
        directions = 2 if self.bidirectional else 1
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        for i in range(layers):
            layer_input = features if i == 0 else hidden * directions
            self.forward_layers.append(CELLS[cell](layer_input, hidden, batch_first=True))
            if self.bidirectional:
                self.backward_layers.append(CELLS[cell](layer_input, hidden, batch_first=True))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = MLP(hidden * directions, list(head or ()), n_outputs, head_dropout, activation)

    def forward(self, particles: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.bool()
        original_mask = mask
        x, n = left_align(particles, mask)
        if not is_exporting():
            # eager speed-up only: positions at or after the longest real sequence are padding
            # everywhere; traced/exported graphs run over all P positions and give the same result
            length = max(int(n.max()), 1) if n.numel() else 1
            x, mask = x[:, :, :length], mask[:, :length]
        positions = torch.ones_like(mask, dtype=torch.long).cumsum(dim=1) - 1
        aligned_mask = positions < n.unsqueeze(1)
        if self.front_end is not None:
            x = self.front_end(x, aligned_mask)  # zero at padded positions
        sequence = x.transpose(1, 2)  # (B, P, F)
        reversed_sequence = reverse_real(sequence, n) if self.bidirectional else sequence
        last = (n - 1).clamp(min=0).view(-1, 1, 1)
        state = sequence
        for i, forward_rnn in enumerate(self.forward_layers):
            if i > 0:
                state = self.dropout(state)
            forward_out, _ = forward_rnn(state)
            if not self.bidirectional:
                state = forward_out
                continue
            if i > 0:
                reversed_sequence = reverse_real(state, n)
            backward_out, _ = self.backward_layers[i](reversed_sequence)
            if i == len(self.forward_layers) - 1 and not self.per_element:
                state = torch.cat([forward_out, backward_out], dim=2)  # both read at n - 1 below
            else:
                state = torch.cat([forward_out, reverse_real(backward_out, n)], dim=2)
        if self.per_element:
            return self._at_elements(self.head(state), original_mask)
        final = state.gather(1, last.expand(-1, 1, state.shape[2])).squeeze(1)
        final = torch.where(n.unsqueeze(1) > 0, final, torch.zeros_like(final))
        return self.head(final)

    @staticmethod
    def _at_elements(aligned: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-position outputs ``(B, L, K)`` of the left-aligned sequence back at the elements'
        own positions: ``(B, K, P)``, zero where ``mask`` ``(B, P)`` is False."""
        real = mask.long()
        position = (real.cumsum(dim=1) - 1).clamp(min=0, max=aligned.shape[1] - 1)  # aligned index
        values = aligned.gather(1, position.unsqueeze(2).expand(-1, -1, aligned.shape[2]))
        return torch.where(mask.unsqueeze(2), values, torch.zeros_like(values)).transpose(1, 2)
