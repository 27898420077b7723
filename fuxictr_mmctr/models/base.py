"""MultimodalRankModel: the contract every model of the package follows.

A model says only how a batch becomes a logit. It writes two methods::

    @register_model
    class MyModel(MultimodalRankModel):
        def build(self, hidden_units=(256, 128), dropout=0.1):    # its hyperparameters
            width = self.inputs.item_dim * 2 + self.inputs.side_dim
            self.mlp = PredictionHead(width, hidden_units, dropout=dropout)

        def score(self, inputs: ModelInputs) -> torch.Tensor:    # (B, 1) logit
            pooled = masked_mean(inputs.history_emb, inputs.history_mask)
            return self.mlp(torch.cat([inputs.side_emb, inputs.target_emb, pooled], dim=-1))

Everything else is done once, here and in :class:`~fuxictr_mmctr.training.trainer.Trainer`:

* the constructor takes FuxiCTR's ``Model(feature_map, **params)``: the shared input stage
  (:class:`~fuxictr_mmctr.layers.input_arch.InputArch`: item encoder, side embeddings,
  ``max_len`` truncation) is built from ``embedding_dim``, ``max_len``, ``use_multimodal`` and
  ``embedding_initializer``; ``build`` receives the params its signature names; the trainer
  receives its own (optimizer, learning rate, early stopping, ...); then parameters are
  initialised as FuxiCTR does and moved to the device;
* ``forward(batch) -> {"logit": (B, 1), "y_pred": sigmoid(logit)}``; the trainer trains on the
  logit (BCE-with-logits, float32);
* ``fit``, ``evaluate``, ``predict``, ``save_weights``, ``load_weights`` are FuxiCTR-compatible
  one-line delegates to the trainer, so FuxiCTR-style scripts keep working.

``field_wise = True`` on a model class asks the input stage for the per-field view
(``inputs.target_fields``/``inputs.side_fields``, ``(B, F, embedding_dim)``);
``reads_history = False`` tells it that ``score`` never reads the history (nothing of it is
encoded); ``exports_dynamic_history = False`` tells ``fuxictr-mmctr export`` that the model's
graph holds only for the width it was traced at, so the history is padded to ``max_len`` inside
the exported graph.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import seed_everything

from fuxictr_mmctr.data.item_table import ItemTable
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.layers.embedding import DEFAULT_INITIALIZER
from fuxictr_mmctr.layers.input_arch import InputArch, ModelInputs
from fuxictr_mmctr.layers.packing import apply_packed_history, history_trim_exact
from fuxictr_mmctr.training.devices import resolve_device
from fuxictr_mmctr.training.trainer import Trainer, TrainerConfig


def resolve_item_table(feature_map, item_table: ItemTable | None, item_info) -> ItemTable:
    """The model's item table: the one given (the pipeline builds it once), else read from the
    ``item_info`` parquet path with the dataset's item-id mapping."""
    if item_table is not None:
        return item_table
    if not item_info:
        raise UserError("model needs item_info (the path of item_info.parquet) in its config")
    import os

    from fuxictr_mmctr.data.catalogue import ItemCatalogue
    from fuxictr_mmctr.data.schema import load_schema

    schema = load_schema(os.path.dirname(os.path.abspath(item_info)))
    return ItemCatalogue.from_item_info(item_info, feature_map, schema).item_table()


class MultimodalRankModel(BaseModel):
    """Base class of the package's ranking models (FuxiCTR ``BaseModel`` API).

    Args (shared by every model; a model's own hyperparameters are its ``build`` arguments):
        feature_map: FeatureMap with item features (``source: item``) and side features.
        model_id: checkpoint name (default: the class name).
        gpu: ``-1`` for the CPU, ``N`` for ``cuda:N`` (an error when there is no such GPU).
        item_table / item_info: the dataset's item table, or the path of item_info.parquet.
        embedding_dim, max_len, use_multimodal, embedding_initializer: of the input stage.
        packed_history: sequence layers skip history padding wherever that is exact
            (:mod:`fuxictr_mmctr.layers.packing`); ``trims_history`` then tells the loader that
            it may drop a batch's all-padding columns.
        embedding_regularizer, net_regularizer: FuxiCTR regularisers (embeddings / the rest).
        seed: seeds python/numpy/torch before the layers are built.
        task: only ``binary_classification`` (a click) is supported.
        model_root: checkpoints go to ``<model_root>/<dataset_id>/<model_id>.model``.
        **params: the ``build`` arguments, the trainer's keys (:class:`TrainerConfig`: optimizer,
            learning_rate, metrics, monitor, early_stop_patience, eval_steps, ...), and any other
            FuxiCTR params (dataset keys and the like, which the model does not use).
    """

    #: Whether ``score`` reads the field-wise view of the inputs (DeepFM-like models).
    field_wise = False
    #: Whether ``score`` reads the history; ``False`` (DeepFM) makes the input stage encode the
    #: targets only, and the loader's batches gather no history item features.
    reads_history = True
    #: Whether ``torch.export`` can keep the history width dynamic (``1..max_len``) through
    #: ``score``; ``False`` (DIEN, whose recurrences are Python loops over the positions, which
    #: tracing unrolls for one width) makes the export pad the history to ``max_len`` in the graph.
    exports_dynamic_history = True

    def __init__(self, feature_map, model_id=None, gpu=-1, item_table=None, item_info=None,
                 embedding_dim=64, max_len=None, use_multimodal=True, packed_history=True,
                 embedding_initializer=DEFAULT_INITIALIZER, embedding_regularizer=None,
                 net_regularizer=None, seed=None, task="binary_classification",
                 model_root="./checkpoints/", **params):
        if task != "binary_classification":
            raise UserError(f"task {task!r} is not supported: the models predict clicks "
                            f"(task: binary_classification)")
        if seed is not None:
            seed_everything(seed=int(seed))
        trainer_config = TrainerConfig.from_params({**params, "seed": seed})
        super().__init__(feature_map, model_id=model_id or type(self).__name__, task=task,
                         gpu=-1, monitor=trainer_config.monitor,
                         save_best_only=trainer_config.save_best_only,
                         monitor_mode=trainer_config.monitor_mode,
                         early_stop_patience=trainer_config.early_stop_patience,
                         eval_steps=trainer_config.eval_steps,
                         embedding_regularizer=embedding_regularizer,
                         net_regularizer=net_regularizer,
                         reduce_lr_on_plateau=trainer_config.reduce_lr_on_plateau,
                         verbose=trainer_config.verbose, model_root=model_root,
                         metrics=list(trainer_config.metrics))
        self.device = resolve_device(gpu)
        self.inputs = InputArch(feature_map,
                                resolve_item_table(feature_map, item_table, item_info),
                                int(embedding_dim), max_len=max_len,
                                use_multimodal=use_multimodal,
                                embedding_initializer=embedding_initializer,
                                field_dim=int(embedding_dim) if self.field_wise else None)
        self.max_len = self.inputs.max_len
        self.inputs.reads_history = self.reads_history
        self.build(**{name: params[name] for name in self.build_parameters() if name in params})
        self.packed_layers = apply_packed_history(self, packed_history)
        self.trims_history = bool(packed_history) and history_trim_exact(self)
        self.reset_parameters()
        self.model_to_device()
        #: What this run is (plain config values): compared on ``--resume`` and recorded with
        #: every weights file (:mod:`fuxictr_mmctr.training.resume`).
        self.run_signature = {
            "model": type(self).__name__, "model_id": self.model_id,
            "embedding_dim": embedding_dim, "max_len": max_len, "use_multimodal": use_multimodal,
            "packed_history": packed_history, "embedding_initializer": embedding_initializer,
            "embedding_regularizer": embedding_regularizer, "net_regularizer": net_regularizer,
            "seed": seed, **params}
        self.trainer_config = trainer_config
        self._trainer = None  # built on first use: construction allocates no optimizer

    # ------------------------------------------------------------------ the model's part
    def build(self, **hyperparameters) -> None:
        """Create the model's archs (``self.inputs`` is ready: ``item_dim``, ``side_dim``)."""
        raise NotImplementedError(f"{type(self).__name__} must define build()")

    def score(self, inputs: ModelInputs) -> torch.Tensor:
        """``ModelInputs -> (B, 1)`` logit (or ``{"logit": (B, 1), "aux_loss": scalar}``)."""
        raise NotImplementedError(f"{type(self).__name__} must define score()")

    @classmethod
    def build_parameters(cls) -> list[str]:
        """Names of the model's own hyperparameters (the arguments of its ``build``)."""
        return [name for name, parameter in inspect.signature(cls.build).parameters.items()
                if name != "self" and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD,
                                                         parameter.KEYWORD_ONLY)]

    def forward(self, batch: dict) -> dict:
        """``batch`` of ids -> ``{"logit": (B, 1), "y_pred": (B, 1) probability}``.

        A ``score`` may return ``{"logit": ..., "aux_loss": scalar}`` instead of the logit alone:
        the trainer adds the auxiliary loss in training (e.g. DIEN's next-item loss).
        """
        scored = self.score(self.inputs(batch))
        output = dict(scored) if isinstance(scored, dict) else {"logit": scored}
        output["y_pred"] = torch.sigmoid(output["logit"])
        return output

    @property
    def item_encoder(self):
        """The shared item encoder (``self.inputs.item_encoder``)."""
        return self.inputs.item_encoder

    # ------------------------------------------------------------------ FuxiCTR delegates
    @property
    def trainer(self) -> Trainer:
        """The model's :class:`Trainer`, built on first use (``fit``, ``evaluate``, ...)."""
        if self._trainer is None:
            self._trainer = Trainer(self, self.trainer_config, self.checkpoint, self.device,
                                    run_signature=self.run_signature)
        return self._trainer

    @trainer.setter
    def trainer(self, trainer: Trainer | None) -> None:
        """Replace the trainer (``None``: build a fresh one on next use), e.g. to benchmark
        other speed switches on the same model."""
        self._trainer = trainer

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.trainer.optimizer

    @property
    def resume_checkpoint(self) -> str:
        return self.trainer.resume_checkpoint

    def fit(self, data_generator, epochs=1, validation_data=None, max_gradient_norm=None,
            resume=False, **kwargs):
        """Train (see :meth:`Trainer.fit`); other FuxiCTR keyword arguments are not used."""
        if max_gradient_norm is not None:
            self.trainer.config.max_gradient_norm = max_gradient_norm
        self.trainer.fit(data_generator, epochs=epochs, validation_data=validation_data,
                         resume=resume)

    def evaluate(self, data_generator, metrics=None) -> dict:
        return self.trainer.evaluate(data_generator, metrics=metrics)

    def predict(self, data_generator) -> np.ndarray:
        return self.trainer.predict(data_generator)

    def save_weights(self, checkpoint) -> None:
        self.trainer.save_weights(checkpoint)

    def load_weights(self, checkpoint) -> None:
        self.trainer.load_weights(checkpoint)

    def lr_decay(self, factor=None, min_lr=1e-6) -> float:
        return self.trainer.lr_decay(factor, min_lr)

    def wrap_distributed(self, **ddp_kwargs) -> None:
        self.trainer.wrap_distributed(**ddp_kwargs)
