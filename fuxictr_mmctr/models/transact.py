"""TransAct (Xia et al., KDD 2023, arXiv 2306.00248), as in FuxiCTR's model_zoo."""
from __future__ import annotations

from fuxictr_mmctr.models.registry import register_model
from fuxictr_mmctr.models.transformer_dcn import Transformer_DCN


@register_model
class TransAct(Transformer_DCN):
    """Transformer_DCN's architecture with TransAct's defaults.

    The same arch as :class:`~fuxictr_mmctr.models.transformer_dcn.Transformer_DCN` (which is
    TransAct widened: ``k = 16`` recent outputs, 2 encoder layers, a prediction MLP): every
    history token is ``[h_i || t]`` (``T = 2D``), the encoder output is reduced to its last
    ``k`` positions and a Linear of its masked max-pool, and ``[side || t || that]`` goes through
    a DCNv2 cross network beside an MLP. Only the defaults differ, FuxiCTR's TransAct ones:
    1 layer, 1 head, feed-forward 512, no dropout, ``k = 1`` (the most recent output), max-pool
    on, 3 cross layers beside ``[1024, 512, 256]``, and no hidden layer in the prediction head
    (the concatenated cross and deep outputs go straight to the logit unit).

    With ``k = 1`` the DCN input is ``S + D + 2T`` wide (``128 + 256 + 2 * 512 = 1408`` at paper
    sizes).

    Hyperparameters: those of :class:`Transformer_DCN` (every argument of its ``build``,
    including switches added there later, is accepted), with the defaults above.
    """

    def build(self, transformer_layers=1, num_heads=1, dim_feedforward=512,
              transformer_dropout=0.0, first_k_cols=1, concat_max_pool=True,
              dcn_cross_layers=3, dcn_hidden_units=(1024, 512, 256), mlp_hidden_units=(),
              hidden_activations="ReLU", net_dropout=0.0, batch_norm=False, **options):
        super().build(transformer_layers=transformer_layers, num_heads=num_heads,
                      dim_feedforward=dim_feedforward, transformer_dropout=transformer_dropout,
                      first_k_cols=first_k_cols, concat_max_pool=concat_max_pool,
                      dcn_cross_layers=dcn_cross_layers, dcn_hidden_units=dcn_hidden_units,
                      mlp_hidden_units=mlp_hidden_units, hidden_activations=hidden_activations,
                      net_dropout=net_dropout, batch_norm=batch_norm, **options)

    @classmethod
    def build_parameters(cls) -> list[str]:
        """TransAct's own arguments plus every other argument of ``Transformer_DCN.build``."""
        own = super().build_parameters()
        return own + [name for name in Transformer_DCN.build_parameters() if name not in own]
