"""DCNv2: Deep & Cross Network V2 (Wang et al., WWW 2021, arXiv 2008.13535) as a baseline.

As FuxiCTR's model_zoo DCNv2: no sequence model; the history enters as the masked mean of its
item vectors.
"""
from __future__ import annotations

from typing import Literal, get_args

import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.cross_deep import CrossDeepArch
from fuxictr_mmctr.layers.input_arch import ModelInputs
from fuxictr_mmctr.layers.prediction_head import PredictionHead
from fuxictr_mmctr.layers.sequence import masked_mean
from fuxictr_mmctr.models.base import MultimodalRankModel
from fuxictr_mmctr.models.registry import register_model

#: Implemented structures (the config check reads the choices from build's annotation).
ModelStructure = Literal["parallel"]
MODEL_STRUCTURES = get_args(ModelStructure)


@register_model
class DCNv2(MultimodalRankModel):
    """InputArch -> masked mean of the history -> CrossDeepArch (parallel) -> one Linear.

    With ``D`` the item width (64 + 64 + 128 = 256 at the challenge's sizes) and ``S`` the
    side-feature width (likes, views: 2 x 64)::

        dcn_input = [side_emb || target_emb || masked_mean(history_emb, history_mask)]   (B, F)
        logit     = Linear(CrossDeepArch(dcn_input))                                    (B, 1)

    ``F = S + 2 D`` = 640 at the challenge's sizes. ``CrossDeepArch`` is FuxiCTR's
    ``model_structure: parallel``: cross layers beside an MLP, outputs concatenated; the head is a
    single ``Linear(F + dnn_hidden_units[-1], 1)`` (a :class:`PredictionHead` with no hidden
    layers), as FuxiCTR's ``fc``.

    Hyperparameters (the arguments of :meth:`build`; defaults are FuxiCTR's DCNv2_default):
        dcn_cross_layers: cross layers (FuxiCTR ``num_cross_layers``).
        dnn_hidden_units, dnn_activations, net_dropout, batch_norm: the parallel MLP
            (FuxiCTR ``parallel_dnn_hidden_units``, ...).
        use_low_rank_mixture, low_rank, num_experts: FuxiCTR's switch and sizes of DCN-V2's
            mixture of low-rank experts (``LowRankMixtureCrossNet``); ``False`` keeps
            full-rank cross layers, whatever ``low_rank`` says.
        model_structure: only ``parallel`` (FuxiCTR's default) is implemented.
    """

    def build(self, dcn_cross_layers=3, dnn_hidden_units=(500, 500, 500), dnn_activations="ReLU",
              net_dropout=0.0, batch_norm=False, use_low_rank_mixture=False, low_rank=32,
              num_experts=4, model_structure: ModelStructure = "parallel"):
        if model_structure not in MODEL_STRUCTURES:
            raise UserError(f"DCNv2 model_structure {model_structure!r} is not supported: "
                            f"only {', '.join(MODEL_STRUCTURES)}")
        if not isinstance(use_low_rank_mixture, bool):
            raise UserError(f"DCNv2 use_low_rank_mixture must be True or False, "
                            f"got {use_low_rank_mixture!r}")
        self.dcn_input_dim = self.inputs.side_dim + 2 * self.inputs.item_dim
        self.cross_deep = CrossDeepArch(self.dcn_input_dim, cross_layers=dcn_cross_layers,
                                        hidden_units=dnn_hidden_units,
                                        hidden_activations=dnn_activations, dropout=net_dropout,
                                        batch_norm=batch_norm,
                                        cross_low_rank=low_rank if use_low_rank_mixture else None,
                                        cross_num_experts=num_experts)
        self.head = PredictionHead(self.cross_deep.output_dim, hidden_units=[])

    def score(self, inputs: ModelInputs) -> torch.Tensor:
        """``ModelInputs -> (B, 1)`` logit."""
        history = masked_mean(inputs.history_emb, inputs.history_mask)
        dcn_input = torch.cat([inputs.side_emb, inputs.target_emb, history], dim=-1)
        return self.head(self.cross_deep(dcn_input))
