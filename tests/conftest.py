"""Shared fixtures for the whole test suite."""
from __future__ import annotations

import pytest

#: Seed of the shared tiny dataset; tests that need other data generate their own.
TINY_SEED = 2025


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    """Path (str) of a tiny synthetic dataset generated once per test session.

    The folder holds train/valid/test/item_info .parquet, schema.json, truth.parquet and
    oracle.json (preset ``tiny``, seed :data:`TINY_SEED`). It is shared: treat it as read-only,
    and copy it (``shutil.copytree``) before changing anything in it.
    """
    from fuxictr_mmctr.data.synthetic import generate

    folder = tmp_path_factory.mktemp("tiny_dataset")
    generate("tiny", seed=TINY_SEED, out_dir=str(folder), verbose=False)
    return str(folder)
