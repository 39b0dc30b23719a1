"""The learned tables of prompt learning: soft-prompt embeddings and prefix-tuning prefixes.

Parameter names follow the peft package (``embedding.weight``; with ``prefix_projection``,
``transform.0`` / ``transform.2`` for the two linear layers), so a model's named parameters read
the same on both sides.
"""
from __future__ import annotations

import torch
from torch import nn


class PromptEmbedding(nn.Module):
    """The learned virtual-token table: [num_virtual_tokens, dim]."""

    def __init__(self, num_virtual_tokens: int, dim: int, init: torch.Tensor | None = None) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_virtual_tokens, dim)
        if init is not None:
            with torch.no_grad():
                self.embedding.weight.copy_(init)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.embedding(indices)

    def flat_prompt(self) -> torch.Tensor:
        """The whole table, [num_virtual_tokens, dim] (what is saved as ``prompt_embeddings``)."""
        return self.embedding.weight


class PrefixEncoder(nn.Module):
    """Prefix tuning's key/value prefixes for every layer: [num_virtual_tokens, num_layers * 2 * token_dim].

    Without projection the prefixes are the table itself. With ``projection`` (P-tuning v2's
    reparameterisation) a [num_virtual_tokens, token_dim] table goes through
    ``Linear(token_dim, encoder_hidden_size) -> Tanh -> Linear(encoder_hidden_size, num_layers * 2 * token_dim)``;
    only the resulting prefixes are saved, so a saved adapter loads back as a plain table.
    """

    def __init__(self, num_virtual_tokens: int, token_dim: int, num_layers: int, encoder_hidden_size: int,
                 projection: bool = False, zero_init: bool = False) -> None:
        super().__init__()
        self.projection = projection
        width = num_layers * 2 * token_dim
        if projection:
            self.embedding = nn.Embedding(num_virtual_tokens, token_dim)
            self.transform = nn.Sequential(
                nn.Linear(token_dim, encoder_hidden_size), nn.Tanh(), nn.Linear(encoder_hidden_size, width))
            if zero_init:
                nn.init.zeros_(self.transform[2].weight)
                nn.init.zeros_(self.transform[2].bias)
        else:
            self.embedding = nn.Embedding(num_virtual_tokens, width)
            if zero_init:
                nn.init.zeros_(self.embedding.weight)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        rows = self.embedding(indices)
        return self.transform(rows) if self.projection else rows

    def flat_prompt(self) -> torch.Tensor:
        """All prefixes, [num_virtual_tokens, num_layers * 2 * token_dim] (saved as ``prompt_embeddings``)."""
        table = self.embedding.weight
        return self.transform(table) if self.projection else table


class PromptEncoder(nn.Module):
    """P-tuning's virtual tokens: a [n, token_dim] table passed through an encoder while training.

    MLP: ``Linear(d, h) -> ReLU -> Linear(h, h) -> ReLU -> Linear(h, d)``. LSTM: a bidirectional
    LSTM of hidden size h, then ``Linear(2h, 2h) -> ReLU -> Linear(2h, d)``. Parameter names follow
    the peft package (``embedding``, ``lstm_head``, ``mlp_head``). With ``inference=True`` (a loaded
    adapter) the table already holds the encoder's output and is used as it is.
    """

    def __init__(self, num_virtual_tokens: int, token_dim: int, hidden_size: int, kind: str = "MLP",
                 num_layers: int = 2, dropout: float = 0.0, inference: bool = False) -> None:
        super().__init__()
        self.projection = not inference
        self.kind = kind
        self.embedding = nn.Embedding(num_virtual_tokens, token_dim)
        if not self.projection:
            return
        if kind == "LSTM":
            self.lstm_head = nn.LSTM(token_dim, hidden_size, num_layers=num_layers, dropout=dropout,
                                     bidirectional=True, batch_first=True)
            self.mlp_head = nn.Sequential(nn.Linear(2 * hidden_size, 2 * hidden_size), nn.ReLU(),
                                          nn.Linear(2 * hidden_size, token_dim))
        else:
            self.mlp_head = nn.Sequential(nn.Linear(token_dim, hidden_size), nn.ReLU(),
                                          nn.Linear(hidden_size, hidden_size), nn.ReLU(),
                                          nn.Linear(hidden_size, token_dim))

    def _encode(self, rows: torch.Tensor) -> torch.Tensor:
        if not self.projection:
            return rows
        if self.kind == "LSTM":
            squeeze = rows.dim() == 2
            seq = rows.unsqueeze(0) if squeeze else rows
            seq = self.lstm_head(seq)[0]
            rows = seq.squeeze(0) if squeeze else seq
        return self.mlp_head(rows)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self._encode(self.embedding(indices))

    def flat_prompt(self) -> torch.Tensor:
        """The encoded virtual tokens, [num_virtual_tokens, token_dim] (saved as ``prompt_embeddings``)."""
        return self._encode(self.embedding.weight)
