"""BST: Behavior Sequence Transformer (Chen et al., DLP-KDD 2019, arXiv 1905.06874)."""
from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.input_arch import ModelInputs
from fuxictr_mmctr.layers.positional import RecencyPositionalEmbedding
from fuxictr_mmctr.layers.prediction_head import PredictionHead
from fuxictr_mmctr.layers.sequence import keep_one_key, masked_mean
from fuxictr_mmctr.models.base import MultimodalRankModel
from fuxictr_mmctr.models.registry import register_model

#: The encoder's feed-forward activations (the config check reads the choices from build's
#: annotation).
FfnActivation = Literal["relu", "gelu", "leaky_relu"]
FFN_ACTIVATIONS = dict(zip(get_args(FfnActivation), (F.relu, F.gelu, F.leaky_relu)))


@register_model
class BST(MultimodalRankModel):
    """Target appended to the history, a transformer over it, mean-pooled, then a DNN.

    With ``D`` the item width, ``P`` the position width, ``L`` history positions and ``S`` the
    side-feature width::

        x    = [h_1 .. h_L, t]                                   tokens    (B, L + 1, D)
        x_j  = [x_j || E[p_j]]   p_j = L - j (target 0, most recent item 1)  (B, L + 1, D + P)
        Z    = TransformerEncoder(x, padding keys ignored)                   (B, L + 1, T)
        pool = mean of Z over real items and the target                      (B, T)
        logit = DNN([side || t || pool])                                     (B, 1)

    ``T = D + P``: the position vector is concatenated, not added (as in FuxiCTR's BST); its
    table (:class:`~fuxictr_mmctr.layers.positional.RecencyPositionalEmbedding`, ``L + 1`` rows)
    is learned and starts sinusoidal. Positions count from the most recent end, so extra left
    padding changes nothing. The encoder is ``nn.TransformerEncoder`` (post-norm, residuals,
    ``batch_first``); the target token is always real, so no row has every key ignored (an
    empty history attends the target alone). Outputs at padding positions are left out of the
    mean. DNN: ``dnn_hidden_units`` then ``Linear(., 1)``.

    At paper sizes (``D = 256``, ``P = 64``) ``T = 320`` and the DNN input is
    ``128 + 256 + 320 = 704`` wide.

    Differences from FuxiCTR's BST (model_zoo/BST): its hand-written block uses LeakyReLU in a
    feed-forward of width ``T`` (here ``ffn_activation="leaky_relu"`` and
    ``dim_feedforward=None`` give the same), and separate attention and block dropouts (here
    one ``transformer_dropout``); its position table is indexed from the left of a fixed-length
    sequence (see the positional layer).

    Hyperparameters (the arguments of :meth:`build`):
        num_heads, transformer_layers, dim_feedforward (``None``: the token width ``T``),
        transformer_dropout, ffn_activation (relu | gelu | leaky_relu): the encoder.
        position_dim: ``P``, width of the position vector (default 64: FuxiCTR sets it to the
            embedding width, 64 in the challenge).
        dnn_hidden_units, dnn_activations, net_dropout, batch_norm: the DNN.

    Needs ``max_len`` (the position table has ``max_len + 1`` rows).
    """

    def build(self, num_heads=4, transformer_layers=1, dim_feedforward=None,
              transformer_dropout=0.0, ffn_activation: FfnActivation = "leaky_relu",
              position_dim=64, dnn_hidden_units=(1024, 512, 256), dnn_activations="ReLU",
              net_dropout=0.0, batch_norm=False):
        if self.inputs.max_len is None:
            raise UserError("BST needs max_len (its position table has max_len + 1 rows)")
        if ffn_activation not in FFN_ACTIVATIONS:
            raise UserError(f"ffn_activation must be one of {sorted(FFN_ACTIVATIONS)}, got "
                            f"{ffn_activation!r}")
        item_dim = self.inputs.item_dim
        self.positions = RecencyPositionalEmbedding(self.inputs.max_len + 1, int(position_dim))
        self.token_dim = item_dim + int(position_dim)
        if int(num_heads) < 1 or self.token_dim % int(num_heads):
            raise UserError(f"num_heads={num_heads} must divide the BST token width "
                            f"{self.token_dim} (item {item_dim} + position {position_dim})")
        layer = nn.TransformerEncoderLayer(
            self.token_dim, int(num_heads),
            self.token_dim if dim_feedforward is None else int(dim_feedforward),
            transformer_dropout, activation=FFN_ACTIVATIONS[ffn_activation], batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, int(transformer_layers),
                                             enable_nested_tensor=False)
        self.dnn_input_dim = self.inputs.side_dim + item_dim + self.token_dim
        self.dnn = PredictionHead(self.dnn_input_dim, hidden_units=dnn_hidden_units,
                                  hidden_activations=dnn_activations, dropout=net_dropout,
                                  batch_norm=batch_norm)

    def tokens(self, inputs: ModelInputs):
        """Encoder input and mask: ``((B, L + 1, T), (B, L + 1) bool)``, the target at index L.

        The mask is ``True`` at real tokens (the history's real items and the target).
        """
        sequence = torch.cat([inputs.history_emb, inputs.target_emb.unsqueeze(-2)], dim=-2)
        real = F.pad(inputs.history_mask, (0, 1), value=True)                 # (B, L + 1)
        return self.positions(sequence), real

    def score(self, inputs: ModelInputs) -> torch.Tensor:
        """``ModelInputs -> (B, 1)`` logit."""
        tokens, real = self.tokens(inputs)
        encoded = self.encoder(tokens, src_key_padding_mask=keep_one_key(~real))
        pooled = masked_mean(encoded, real)
        return self.dnn(torch.cat([inputs.side_emb, inputs.target_emb, pooled], dim=-1))
