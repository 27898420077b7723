"""DIEN (Zhou et al., AAAI 2019): interest extraction (GRU) and interest evolution (AUGRU).

Sizes follow FuxiCTR's model_zoo DIEN (state width = item width, bilinear attention with a
masked softmax); the data and training settings follow the challenge's DIN
(``config/model_config/DIEN.yaml``). Unlike packing-based implementations, every recurrence
takes the history mask, so left-padded histories are read exactly (layers/interest_gru.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fuxictr_mmctr.layers.input_arch import ModelInputs
from fuxictr_mmctr.layers.interest_gru import AUGRU, BilinearAttention, MaskedGRU
from fuxictr_mmctr.layers.prediction_head import PredictionHead
from fuxictr_mmctr.models.base import MultimodalRankModel
from fuxictr_mmctr.models.registry import register_model


@register_model
class DIEN(MultimodalRankModel):
    """InputArch -> MaskedGRU -> BilinearAttention -> AUGRU -> PredictionHead.

    With ``D`` the item width, ``H`` the interest width (``D`` by default, as FuxiCTR) and ``S``
    the side-feature width::

        states, _   = MaskedGRU(history_emb, history_mask)            (B, L, H) interest extractor
        a           = masked softmax_t(h_t^T W target_emb)            (B, L)    bilinear attention
        _, interest = AUGRU(states, a, history_mask)                  (B, H)    interest evolution
        logit       = DNN([side_emb || target_emb || interest])       (B, S + D + H) -> (B, 1)

    The DNN input has no pooled history (FuxiCTR's default ``enable_sum_pooling: False``).

    Auxiliary loss (``use_aux_loss``, off by default; training mode only). For every pair of
    consecutive real positions ``(t, t+1)`` the extractor state ``h_t`` should tell the next
    item ``e_{t+1}`` from a negative ``e~_{t+1}``, an item id drawn uniformly from the item
    table's real rows (1 .. num_items - 1) and encoded by the shared item encoder. Pairs are
    scored by a small MLP on ``[h_t || e]`` (FuxiCTR's ``aux_net``, ``aux_hidden_units``), and::

        aux_loss = aux_loss_alpha * mean over pairs of
                   [-log sigmoid(s(h_t, e_{t+1})) - log(1 - sigmoid(s(h_t, e~_{t+1})))]

    ``score`` then returns ``{"logit": ..., "aux_loss": ...}`` (the trainer adds it); in eval
    mode, or with the loss off, it returns the logit.

    Hyperparameters (the arguments of :meth:`build`):
        interest_dim: ``H``, width of the GRU and AUGRU states (``None``: the item width).
        dnn_hidden_units, dnn_activations, net_dropout, batch_norm: the DNN.
        use_aux_loss, aux_loss_alpha, aux_hidden_units, aux_activation: the auxiliary loss.
    """

    #: The GRU and AUGRU loop over the positions in Python; ``torch.export`` unrolls the loop
    #: for the traced width, so an exported DIEN takes its history padded to ``max_len``.
    exports_dynamic_history = False

    def build(self, interest_dim=None, dnn_hidden_units=(1024, 512, 256), dnn_activations="ReLU",
              net_dropout=0.1, batch_norm=True, use_aux_loss=False, aux_loss_alpha=1.0,
              aux_hidden_units=(100, 50), aux_activation="ReLU"):
        item_dim = self.inputs.item_dim
        self.interest_dim = item_dim if interest_dim is None else int(interest_dim)
        self.extractor = MaskedGRU(item_dim, self.interest_dim)
        self.attention = BilinearAttention(self.interest_dim, item_dim)
        self.evolution = AUGRU(self.interest_dim, self.interest_dim)
        self.dnn_input_dim = self.inputs.side_dim + item_dim + self.interest_dim
        self.head = PredictionHead(self.dnn_input_dim, hidden_units=dnn_hidden_units,
                                   hidden_activations=dnn_activations, dropout=net_dropout,
                                   batch_norm=batch_norm)
        self.aux_loss_alpha = float(aux_loss_alpha)
        self.aux_scorer = (PredictionHead(self.interest_dim + item_dim,
                                          hidden_units=aux_hidden_units,
                                          hidden_activations=aux_activation)
                           if use_aux_loss else None)

    def score(self, inputs: ModelInputs):
        """``ModelInputs -> (B, 1)`` logit (with ``aux_loss`` in training when it is on)."""
        states, _ = self.extractor(inputs.history_emb, inputs.history_mask)
        weights = self.attention(inputs.target_emb, states, inputs.history_mask)
        _, interest = self.evolution(states, weights, inputs.history_mask)
        logit = self.head(torch.cat([inputs.side_emb, inputs.target_emb, interest], dim=-1))
        if self.training and self.aux_scorer is not None:
            return {"logit": logit,
                    "aux_loss": self.aux_loss_alpha * self.auxiliary_loss(states, inputs)}
        return logit

    def auxiliary_loss(self, states: torch.Tensor, inputs: ModelInputs) -> torch.Tensor:
        """Next-item loss of the extractor states (class docstring): a scalar, 0 without pairs.

        ``states (B, L, H)`` are the extractor's; positives are ``inputs.history_emb``.
        """
        mask = inputs.history_mask
        pairs = (mask[:, :-1] & mask[:, 1:]).to(states.dtype)               # (B, L - 1)
        current = states[:, :-1]
        encoder = self.inputs.item_encoder
        negative_ids = torch.randint(1, encoder.num_items, pairs.shape, device=mask.device)
        positive_logit = self._aux_logit(current, inputs.history_emb[:, 1:])
        negative_logit = self._aux_logit(current, encoder(negative_ids))
        losses = F.softplus(-positive_logit) + F.softplus(negative_logit)
        return (losses * pairs).sum() / pairs.sum().clamp_min(1.0)

    def _aux_logit(self, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(B, T, H), (B, T, D) -> (B, T)`` pair logits of the auxiliary scorer."""
        batch, steps, _ = states.shape
        pairs = torch.cat([states, items.to(states.dtype)], dim=-1)
        return self.aux_scorer(pairs.reshape(batch * steps, -1)).view(batch, steps)
