"""torch.compile really compiles the packed models: after a warm-up over every history width,
new batch sizes, new real-position counts, rows with empty histories and an all-padding batch
compile nothing new (``error_on_recompile``: falling back to eager or recompiling fails), and
the compiled outputs equal the eager ones."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fuxictr_mmctr.data.history_plan import with_plan
from fuxictr_mmctr.models.din import DIN
from fuxictr_mmctr.models.qin import QIN
from fuxictr_mmctr.models.transformer_dcn import Transformer_DCN
from fuxictr_mmctr.training import speed
from tests.models.builders import L, make_batch, tiny_model

NO_DROPOUT = {Transformer_DCN: dict(transformer_dropout=0.0, net_dropout=0.0, first_k_cols=4,
                                    transformer_layers=1, dim_feedforward=16,
                                    dcn_hidden_units=(16,), mlp_hidden_units=(8,)),
              DIN: dict(attention_dropout=0.0, net_dropout=0.0, batch_norm=False,
                        attention_hidden_units=(16,), dnn_hidden_units=(16,)),
              QIN: dict(net_dropout=0.0, batch_norm=False, num_layers=1)}


def loader_batch(lengths, seed, width=L):
    """A batch as the loader makes it: trimmed to ``width`` columns, with its history plan."""
    batch = make_batch(seed=seed, lengths=lengths)
    return with_plan(dict(batch, item_seq=batch["item_seq"][:, L - width:].contiguous()))


def random_batches(sizes, seed, longest=L, width=L):
    rng = np.random.default_rng(seed)
    return [loader_batch(list(rng.integers(0, longest + 1, size)), seed + index, width)
            for index, size in enumerate(sizes)]


@pytest.mark.parametrize("model_class", [Transformer_DCN, DIN, QIN],
                         ids=lambda cls: cls.__name__)
def test_compiled_packed_models_never_recompile_and_equal_eager(model_class, tmp_path,
                                                                counting_backend):
    model = tiny_model(model_class, tmp_path / "compiled", compile=True,
                       **NO_DROPOUT[model_class])
    eager = tiny_model(model_class, tmp_path / "eager", **NO_DROPOUT[model_class])
    eager.load_state_dict(model.state_dict())
    assert model.trainer.compiling and model.packed_layers

    def step_and_check(batch):
        model.train()
        model.trainer.compute_loss(batch).backward()
        model.eval()
        eager.eval()
        with torch.no_grad():
            compiled = model.trainer.forward(batch, training=False)["logit"]
            expected = eager(batch)["logit"]
        torch.testing.assert_close(compiled, expected, rtol=1e-4, atol=1e-5)

    # Warm-up: both history widths of the ladder (8, L), training and evaluation.
    for batch in random_batches([24, 17], seed=1) + random_batches([24, 13], seed=2,
                                                                   longest=8, width=8):
        step_and_check(batch)
    compiled = len(counting_backend)
    assert compiled > 0
    torch._dynamo.config.error_on_recompile = True
    # New sizes and real-position counts, rows with empty histories, an all-padding batch,
    # a batch with a single real position.
    later = (random_batches([31, 9, 40], seed=7) + random_batches([11], seed=8, longest=3, width=8)
             + [loader_batch([0] * 6, seed=9, width=8),
                loader_batch([0, 0, 1, 0, 0], seed=10, width=8),
                loader_batch([0, L, 0, 3, 0, 0, L], seed=11)])
    for batch in later:
        step_and_check(batch)
    assert len(counting_backend) == compiled


@pytest.mark.slow
def test_inductor_compiled_transformer_equals_eager_on_empty_histories(tmp_path):
    """The real backend (inductor), evaluation forward: rows with empty histories and a batch
    whose every row is padding give the eager outputs (no fully masked attention row: an empty
    row keeps one key)."""
    if speed.compile_unavailable(torch.device("cpu")):
        pytest.skip(speed.compile_unavailable(torch.device("cpu")))
    torch._dynamo.reset()
    model = tiny_model(Transformer_DCN, tmp_path / "compiled", compile=True,
                       **NO_DROPOUT[Transformer_DCN]).eval()
    batches = [loader_batch([0, 3, 0, L, 1, 0, 7, 2], seed=1),
               loader_batch([0] * 8, seed=2), loader_batch([0, 0, 5, 0, 0, 0, 0, 1], seed=3)]
    try:
        with torch.no_grad():
            for batch in batches:
                compiled = model.trainer.forward(batch, training=False)["logit"]
                torch.testing.assert_close(compiled, model(batch)["logit"], rtol=1e-4,
                                           atol=1e-5)
    finally:
        torch._dynamo.reset()
    assert model.trainer.compiling
