"""FuxiCTR's rules for the best-weights file, applied by the trainer: at each evaluation point
save on improvement, decay the learning rate on a plateau, stop after ``early_stop_patience``;
at the end of ``fit``, load the best weights back (or save the final ones when no evaluation
saved any)."""
from __future__ import annotations

import logging

from fuxictr_mmctr.training import distributed


def after_evaluation(trainer, logs: dict, epoch: int) -> None:
    """Apply the rules to ``trainer`` after an evaluation that gave ``logs`` in ``epoch``."""
    mode = trainer.config.monitor_mode
    decision = trainer.stopper.update(logs)
    if decision.improved:
        if trainer.config.save_best_only:
            _log(f"Save best model: monitor({mode})={decision.value:.6f}")
            trainer.save_weights(trainer.checkpoint)
            trainer.checkpoint_saved = True
    else:
        _log(f"Monitor({mode})={decision.value:.6f} STOP!")
        if trainer.config.reduce_lr_on_plateau:
            _log(f"Reduce learning rate on plateau: {trainer.lr_decay():.6f}")
    if decision.stop:
        _log(f"********* Epoch={epoch + 1} early stop *********")
    if not trainer.config.save_best_only:
        trainer.save_weights(trainer.checkpoint)
        trainer.checkpoint_saved = True


def finish(trainer) -> None:
    """End of ``fit``: the last loss checked (weights trained on a diverged loss are never
    kept), then the best weights loaded, or the final ones saved when none were."""
    if trainer.loss_meter.batches:
        trainer.loss_meter.read(trainer.global_step, trainer.epoch, trainer.checkpoint)
    _log("Training finished.")
    if trainer.checkpoint_saved:
        distributed.barrier()
        _log(f"Load best model: {trainer.checkpoint}")
        trainer.load_weights(trainer.checkpoint)
    else:
        _log(f"No evaluation saved a checkpoint; saving the final weights: {trainer.checkpoint}")
        trainer.save_weights(trainer.checkpoint)
        distributed.barrier()


def _log(message: str) -> None:
    if distributed.is_main():
        logging.info(message)
