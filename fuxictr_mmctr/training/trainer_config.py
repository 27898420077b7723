"""TrainerConfig: the trainer's model-config keys, checked, and the optimizer they name.

Every field of :class:`TrainerConfig` is a FuxiCTR model-config key of the same name
(``optimizer``, ``learning_rate``, ``monitor``, ``eval_steps``, the speed switches, ...); the
rest of a params dict is not the trainer's business.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.training import speed

#: Loss names accepted for the click task; all mean BCE-with-logits on the model's logit.
BCE_LOSSES = ("binary_crossentropy", "binary_cross_entropy", "bce",
              "binary_cross_entropy_with_logits")
#: Config fields for which ``null`` means something (no evaluation steps, no clipping, ...).
_NULLABLE = ("eval_steps", "max_gradient_norm", "group_id", "seed")


@dataclass
class TrainerConfig:
    """How to train; every field is a FuxiCTR model-config key of the same name."""

    optimizer: str = "adam"
    learning_rate: float = 1e-3
    loss: str = "binary_crossentropy"
    metrics: tuple = ("logloss", "AUC")
    monitor: object = "AUC"
    monitor_mode: str = "max"
    early_stop_patience: int = 2
    eval_steps: int | None = None
    save_best_only: bool = True
    reduce_lr_on_plateau: bool = True
    lr_decay_factor: float = 0.1
    max_gradient_norm: float | None = 10.0
    accumulation_steps: int = 1
    save_resume_state: bool = True
    verbose: int = 1
    group_id: str | None = None
    seed: int | None = None
    precision: str = "fp32"
    compile: bool = False
    tf32: bool = True
    fused_optimizer: bool = True

    @classmethod
    def from_params(cls, params: dict) -> "TrainerConfig":
        """The trainer's fields out of a FuxiCTR params dict (other keys are not its business)."""
        values = {name: params[name] for name in cls.keys()
                  if name in params and (params[name] is not None or name in _NULLABLE)}
        config = cls(**values)
        config.check()
        return config

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def make_optimizer(self, parameters, device: torch.device) -> torch.optim.Optimizer:
        """The configured optimizer over the trainable ``parameters`` (fused on CUDA when
        ``fused_optimizer`` and the optimizer has a fused kernel)."""
        options = speed.optimizer_options(optimizer_class(self.optimizer), device,
                                          self.fused_optimizer)
        return make_optimizer(self.optimizer, parameters, self.learning_rate, **options)

    def check(self) -> None:
        if self.eval_steps is not None and int(self.eval_steps) < 1:
            raise UserError(f"eval_steps must be a positive integer or null, got {self.eval_steps}")
        if int(self.accumulation_steps) < 1:
            raise UserError(f"accumulation_steps must be >= 1, got {self.accumulation_steps}")
        if str(self.loss) not in BCE_LOSSES:
            raise UserError(f"loss {self.loss!r} is not supported: the click task trains with "
                            f"binary cross-entropy on logits ({', '.join(BCE_LOSSES[:1])})")
        if not 0 < float(self.lr_decay_factor) <= 1:
            raise UserError(f"lr_decay_factor must be in (0, 1], got {self.lr_decay_factor}")
        if self.monitor_mode not in ("max", "min"):
            raise UserError(f"monitor_mode must be 'max' or 'min', got {self.monitor_mode!r}")
        if self.precision not in speed.PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(speed.PRECISIONS)}, got "
                            f"{self.precision!r}")
        for key in ("compile", "tf32", "fused_optimizer"):
            if not isinstance(getattr(self, key), bool):
                raise UserError(f"{key} must be True or False, got {getattr(self, key)!r}")


def optimizer_class(name) -> type:
    """The ``torch.optim`` class an optimizer name means (``adam`` -> ``Adam``); UserError else."""
    class_name = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD",
                  "adagrad": "Adagrad", "rmsprop": "RMSprop"}.get(str(name).lower(), str(name))
    found = getattr(torch.optim, class_name, None)
    if not (isinstance(found, type) and issubclass(found, torch.optim.Optimizer)):
        raise UserError(f"optimizer {name!r} is not a torch.optim optimizer (e.g. adam, adamw, sgd)")
    return found


def make_optimizer(name, parameters, learning_rate: float, **options) -> torch.optim.Optimizer:
    """``torch.optim.<name>`` over the trainable ``parameters`` (``options``: e.g. ``fused``)."""
    return optimizer_class(name)([p for p in parameters if p.requires_grad],
                                 lr=float(learning_rate), **options)
