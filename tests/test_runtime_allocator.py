"""runtime.reuse_freed_memory: glibc keeps freed tensor memory for reuse (no mmap / munmap and page faults per large
tensor); what is computed does not change. Run in a fresh interpreter: the setting is process-wide and a test in
this process may have applied it already (ddflow.cli's setup)."""
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from ddflow.runtime import reuse_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
SRC = str(Path(__file__).resolve().parents[1] / "src")

PROBE = """
import json, resource, torch, torch.nn.functional as F
from ddflow.runtime import reuse_freed_memory
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
x, w0 = torch.randn(8, 4, 96, 96, generator=g), torch.randn(128, 4, 3, 3, generator=g)

def step():  # its activations (8 x 128 x 96 x 96 floats, 36 MiB) are above glibc's mmap threshold (32 MiB at most)
    w = w0.clone().requires_grad_(True)
    out = F.relu(F.conv2d(x, w, padding=1))
    return out.detach(), torch.autograd.grad(out.square().sum(), w)[0]

def faults():
    step()
    f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out = step()
    return out, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f

before, default = faults()
applied = reuse_freed_memory()
after, reused = faults()
print(json.dumps({"applied": applied, "same": all(torch.equal(a, b) for a, b in zip(before, after)),
                  "default": default, "reused": reused}))
"""


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_reuse_freed_memory_keeps_values_and_saves_page_faults():
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                                  check=True, timeout=120).stdout)
    assert r["applied"] and r["same"], r
    assert r["reused"] < r["default"] / 4, r


def test_reuse_freed_memory_is_a_no_op_elsewhere(monkeypatch):
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert reuse_freed_memory() is False
