"""The trainer's speed switches on the CPU: precision (bf16/fp16 autocast, gradient scaler),
compile (dynamic shapes, clean fallback), fused-optimizer options, and the dataset config's
``loader:`` block reaching the loader (with history trimming)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fuxictr_mmctr.data.batches import BatchLoader, trimmed_width
from fuxictr_mmctr.data.history_plan import PLAN_KEYS
from fuxictr_mmctr.data.loader import load_split
from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.pipeline import config_check
from fuxictr_mmctr.training import speed
from fuxictr_mmctr.training.trainer_config import TrainerConfig
from tests.models.builders import L, make_batch, tiny_transformer_dcn

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "config")
TINY = "Transformer_DCN_MicroLens_tiny"


class Batches:
    """A fixed list of batches with the loader interface the trainer uses."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


def batches_of(sizes, seed=0, longest=L):
    """One batch per size, histories of random lengths 0..longest (left-padded, width L)."""
    rng = np.random.default_rng(seed)
    return [make_batch(seed=seed + i, lengths=list(rng.integers(0, longest + 1, size)))
            for i, size in enumerate(sizes)]


def output_dtypes(model, batch, training):
    """dtypes of the encoder's feed-forward outputs in one forward (training: through the
    trainer's training path, i.e. under the configured autocast)."""
    seen = set()
    linear = model.sequence_arch.encoder.layers[0].linear1
    hook = linear.register_forward_hook(lambda m, args, out: seen.add(out.dtype))
    try:
        if training:
            model.train()
            loss = model.trainer.compute_loss(batch)
        else:
            model.trainer.predict(Batches([batch]))
            loss = None
    finally:
        hook.remove()
    return seen, loss


# --- precision -------------------------------------------------------------------------------

def test_bf16_autocast_trains_a_step_on_the_cpu_with_a_finite_float32_loss(tmp_path):
    model = tiny_transformer_dcn(tmp_path, precision="bf16")
    assert model.trainer.autocast_dtype is torch.bfloat16
    assert not model.trainer.scaler.is_enabled()          # bf16 needs no loss scaling
    batch = make_batch()
    dtypes, loss = output_dtypes(model, batch, training=True)
    assert dtypes == {torch.bfloat16}
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.trainer._accumulate_gradients(batch, 1.0)
    model.trainer._optimizer_step()
    assert all(p.dtype == torch.float32 for p in model.parameters())   # weights stay float32
    moved = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert len(moved) > len(before) // 2
    # Evaluation runs in float32 (bf16 would tie the scores).
    dtypes, _ = output_dtypes(model, batch, training=False)
    assert dtypes == {torch.float32}


def test_fp16_uses_a_gradient_scaler_saved_in_the_resume_state(tmp_path):
    model = tiny_transformer_dcn(tmp_path, precision="fp16", eval_steps=2)
    assert model.trainer.scaler.is_enabled()
    dtypes, loss = output_dtypes(model, make_batch(), training=True)
    assert dtypes == {torch.float16} and torch.isfinite(loss)
    model.fit(Batches(batches_of([32] * 4)), epochs=1, validation_data=Batches(batches_of([32])))
    state = torch.load(model.resume_checkpoint, weights_only=True)
    assert state["grad_scaler"]["scale"] > 0
    assert np.isfinite(model.predict(Batches(batches_of([16])))).all()


def test_fp32_trains_exactly_as_before_the_switches(tmp_path):
    """``precision: fp32`` is the plain path: no autocast, the scaler a no-op."""
    plain = tiny_transformer_dcn(tmp_path / "a")
    explicit = tiny_transformer_dcn(tmp_path / "b", precision="fp32", compile=False)
    for model in (plain, explicit):
        assert model.trainer.autocast_dtype is None and not model.trainer.scaler.is_enabled()
        torch.manual_seed(1)  # the same dropout masks
        model.fit(Batches(batches_of([32] * 3)), epochs=1)
    batch = make_batch(seed=9)
    plain.eval(), explicit.eval()
    with torch.no_grad():
        assert torch.equal(plain(batch)["logit"], explicit(batch)["logit"])


def test_unknown_precision_is_one_line():
    with pytest.raises(UserError, match="precision must be one of fp32, bf16, fp16"):
        TrainerConfig.from_params({"precision": "fp8"})
    params = config_check.load_params(CONFIG_DIR, TINY)
    for key, value, message in (("precision", "float16", "precision must be one of"),
                                ("compile", "yes", "compile must be True or False"),
                                ("packed_history", 1, "packed_history must be True or False"),
                                ("fused_optimizer", None, "fused_optimizer must be True or")):
        with pytest.raises(UserError, match=message):
            config_check.check_params({**params, key: value})


# --- compile ---------------------------------------------------------------------------------

def test_compile_reuses_its_graphs_for_new_batch_sizes_and_widths(tmp_path, counting_backend,
                                                                  monkeypatch):
    model = tiny_transformer_dcn(tmp_path / "compiled", compile=True, transformer_dropout=0.0,
                                 net_dropout=0.0)
    eager = tiny_transformer_dcn(tmp_path / "eager", transformer_dropout=0.0, net_dropout=0.0)
    eager.load_state_dict(model.state_dict())
    eager.eval()
    assert model.trainer.compiling

    def step_and_check(batch):
        model.train()
        model.trainer.compute_loss(batch).backward()
        predictions = model.trainer.predict(Batches([batch]))
        with torch.no_grad():
            expected = torch.sigmoid(eager(batch)["logit"].double()).reshape(-1).numpy()
        np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-6)

    # Warm-up: a full and a short batch, long and short histories, a trimmed width.
    warm_up = batches_of([64, 23]) + batches_of([64], longest=3)
    warm_up.append(dict(warm_up[-1], item_seq=warm_up[-1]["item_seq"][:, -8:]))
    for batch in warm_up:
        step_and_check(batch)
    compiled = len(counting_backend)
    assert compiled > 0
    torch._dynamo.config.error_on_recompile = True  # no eager fallback (the fixture restores it)
    # New batch sizes (a last short batch, evaluation sizes), new length mixes: no new graph.
    for batch in batches_of([37, 64, 11, 50], seed=7) + batches_of([29], seed=8, longest=5):
        step_and_check(batch)
    assert len(counting_backend) == compiled


def test_compile_where_unsupported_is_an_error_not_an_uncompiled_run(tmp_path, monkeypatch):
    """compile: True that cannot be honoured stops the run before it trains (no fallback)."""
    monkeypatch.setattr(speed, "compile_unavailable", lambda device: "no C++ compiler here")
    model = tiny_transformer_dcn(tmp_path, compile=True)
    with pytest.raises(UserError) as error:
        model.trainer  # noqa: B018 - the trainer is built on first use
    assert str(error.value) == ("compile: True cannot run here (no C++ compiler here); set "
                                "compile: False to train uncompiled")


def test_a_compiler_failure_is_an_error_not_an_uncompiled_run(tmp_path, monkeypatch):
    def broken_backend(graph_module, example_inputs):
        raise RuntimeError("the C++ compiler crashed")

    torch._dynamo.reset()
    monkeypatch.setattr(speed, "COMPILE_BACKEND", broken_backend)
    model = tiny_transformer_dcn(tmp_path, compile=True)
    assert model.trainer.compiling
    try:
        model.train()
        with pytest.raises(UserError) as error:
            model.trainer.compute_loss(make_batch())
    finally:
        torch._dynamo.reset()
    message = str(error.value)
    assert message.startswith("compile: torch.compile failed on Transformer_DCN (")
    assert "the C++ compiler crashed" in message
    assert message.endswith("set compile: False to train uncompiled")
    assert "\n" not in message


# --- fused optimizers and TF32 ---------------------------------------------------------------

def test_fused_optimizer_only_on_cuda_and_only_where_it_exists():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert speed.optimizer_options(torch.optim.Adam, cuda, True) == {"fused": True}
    assert speed.optimizer_options(torch.optim.Adam, cuda, False) == {}
    assert speed.optimizer_options(torch.optim.Adam, cpu, True) == {}
    assert speed.optimizer_options(torch.optim.Rprop, cuda, True) == {}   # has no fused kernel


# --- the loader block ------------------------------------------------------------------------

def tiny_params(tiny_dataset, tmp_path, **changes):
    params = config_check.load_params(CONFIG_DIR, TINY)
    for key in ("train_data", "valid_data", "test_data", "item_info"):
        params[key] = os.path.join(tiny_dataset, os.path.basename(params[key]))
    params.update(data_root=str(tmp_path / "feature_maps"), model_root=str(tmp_path / "ckpt"),
                  verbose=0, **changes)
    return config_check.check_params(params)


def test_the_loader_block_reaches_the_loaders(tiny_dataset, tmp_path):
    from fuxictr_mmctr.pipeline.experiment import make_loader, prepare

    params = tiny_params(tiny_dataset, tmp_path, loader={"on_device": True, "drop_last": True})
    _, catalogue = prepare(params)
    train = make_loader(params, catalogue, params["train_data"], True, "cpu", trim_history=True)
    valid = make_loader(params, catalogue, params["valid_data"], False, "cpu")
    assert train.on_device and valid.on_device and not train.pin_memory
    assert train.drop_last and not valid.drop_last          # evaluation sees every row
    assert len(train) == train.num_rows // params["batch_size"]
    assert train.trim_history and not valid.trim_history
    default = make_loader(tiny_params(tiny_dataset, tmp_path / "d"), catalogue,
                          params["valid_data"], False, "cpu")
    assert not default.on_device and not default.drop_last and not default.pin_memory


@pytest.mark.parametrize("loader,message", [
    ({"drop_lst": True}, "unknown loader option 'drop_lst'; did you mean drop_last?"),
    ({"on_device": "yes"}, "loader on_device must be True or False, got 'yes'"),
    ([1], "loader must be a mapping"),
    ({"on_device": True, "pin_memory": True}, "on_device and pin_memory exclude each other"),
])
def test_a_bad_loader_block_is_one_line(tiny_dataset, tmp_path, loader, message):
    with pytest.raises(UserError, match=message):
        tiny_params(tiny_dataset, tmp_path, loader=loader)


def test_pinned_memory_needs_a_gpu(tiny_dataset):
    split = load_split(os.path.join(tiny_dataset, "valid.parquet"))
    with pytest.raises(UserError, match="pin_memory: True needs a CUDA device"):
        BatchLoader(split, batch_size=64, device="cpu", pin_memory=True)


def test_trimmed_batches_drop_only_all_padding_columns(tiny_dataset):
    split = load_split(os.path.join(tiny_dataset, "valid.parquet"))
    full = BatchLoader(split, batch_size=16, shuffle=True, seed=1)
    trimmed = BatchLoader(split, batch_size=16, shuffle=True, seed=1, trim_history=True)
    length = split.item_seq.shape[1]
    widths = set()
    for before, after in zip(full, trimmed):
        history, kept = before["item_seq"], after["item_seq"]
        width = kept.shape[1]
        widths.add(width)
        longest = int((history != 0).sum(dim=1).max())
        assert width == trimmed_width(longest, length)
        assert torch.equal(kept, history[:, length - width:])
        assert history[:, :length - width].abs().sum() == 0
        for name in before:
            if name != "item_seq" and name not in PLAN_KEYS:   # the plan follows the width
                assert torch.equal(before[name], after[name])
    assert len(widths) > 1 and min(widths) < length
