"""Atomic checkpoint files and RNG state capture."""
import os
import random

import numpy as np
import pytest
import torch

from fuxictr_mmctr.errors import UserError
from fuxictr_mmctr.training import checkpoint as ckpt


class FailsWhilePickled:
    def __reduce__(self):
        raise OSError("disk full")


def test_resume_path_sits_beside_the_weights():
    assert ckpt.resume_path("/m/toy/DCN.model") == "/m/toy/DCN.resume.pt"


def test_failed_save_leaves_previous_file_and_no_temp_file(tmp_path):
    path = str(tmp_path / "Toy.model")
    ckpt.save_atomic({"w": torch.ones(3)}, path)
    # The big tensor is written before the failing object: a partial file exists mid-save.
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_atomic({"w": torch.zeros(100_000), "x": FailsWhilePickled()}, path)
    assert os.listdir(tmp_path) == ["Toy.model"]
    assert torch.equal(ckpt.load_file(path)["w"], torch.ones(3))


def test_load_file_errors(tmp_path):
    with pytest.raises(UserError, match="resume state not found"):
        ckpt.load_file(str(tmp_path / "none.pt"), "resume state")
    truncated = tmp_path / "cut.model"
    ckpt.save_atomic({"w": torch.ones(1000)}, str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(UserError, match="cut.model: not a readable checkpoint"):
        ckpt.load_file(str(truncated))


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    path = str(tmp_path / "state.pt")
    ckpt.save_atomic({"rng": ckpt.capture_rng_state()}, path)
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    ckpt.restore_rng_state(ckpt.load_file(path)["rng"])  # weights_only=True load
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_file(tmp_path,
                                                                          monkeypatch):
    path = tmp_path / "model.model"
    ckpt.save_atomic({"w": torch.ones(2)}, str(path))

    def full_disk(obj, target):
        target.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(UserError, match=r"cannot write .*model.model: disk full or not writable "
                                        r"\(.*file write failed\); the previous file is "
                                        r"unchanged"):
        ckpt.save_atomic({"w": torch.zeros(2)}, str(path))
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.model"]


class RefusesItsWeights(torch.nn.Linear):
    def load_state_dict(self, state_dict, strict=True, assign=False):
        raise RuntimeError("")  # an error with no message at all


def test_weights_that_fail_to_load_without_a_message_still_give_one_line(tmp_path):
    from fuxictr_mmctr.training import weights

    path = str(tmp_path / "toy.model")
    torch.save(torch.nn.Linear(2, 1).state_dict(), path)
    with pytest.raises(UserError, match=r"weights do not match model RefusesItsWeights "
                                        r"\(RuntimeError\)$"):
        weights.load(RefusesItsWeights(2, 1), path, torch.device("cpu"))


def test_first_line_is_the_first_non_empty_line_or_the_type_name():
    from fuxictr_mmctr.errors import first_line

    assert first_line(ValueError("\n  bad shape  \n(details)")) == "bad shape"
    assert first_line(KeyError()) == "KeyError"
