"""The quick preset is the same code at reduced scale and must still show the method working: DM beats Random at
IPC 1 on the embedded mnist5k by more than 5 points and by more than two pooled standard deviations."""
import math

import pytest
import torch

from ddflow.data import get_info
from ddflow.protocols import protocol_settings
from ddflow.settings import distill_cell as run
from ddflow.stages.evaluate import evaluate_record as evaluate_cell

pytestmark = pytest.mark.workflow


def test_quick_dm_beats_random_at_ipc1(mnist5k, mnist5k_path, tmp_path):
    cpu = torch.device("cpu")
    results = {}
    for method in ("random", "dm"):
        distilled = run(method, "mnist5k", 1, 0, "quick", cpu, mnist5k_path, tmp_path / f"{method}.pt")
        settings = protocol_settings(method, "mnist5k", 1, "quick", "dc")
        results[method] = evaluate_cell(distilled, "dc", settings, mnist5k, cpu)
    r, d = results["random"], results["dm"]
    pooled = math.sqrt((r["std"] ** 2 + d["std"] ** 2) / 2)
    gap = d["mean"] - r["mean"]
    assert r["n_models"] >= 2 and d["n_models"] >= 2
    assert gap > 5.0, (r["accuracies"], d["accuracies"])
    assert gap > 2 * pooled, (gap, pooled)
    assert get_info("mnist5k").classes == 10
