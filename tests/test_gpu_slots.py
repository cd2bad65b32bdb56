"""GPU slots on a multi-GPU workstation (ddflow.gpu_slots), on the CPU with fake GPU ids: concurrent jobs claim
distinct GPUs, a released GPU is claimed again, a killed job's GPU is free again, and resolve_device gives a job
its claimed GPU."""
import os
import signal
import subprocess
import sys

import pytest
import torch

from ddflow import gpu_slots
from ddflow.errors import DdflowError
from ddflow.runtime import resolve_device
from tiny_workflow import ROOT

IDS = ["GPU-aaaa", "GPU-bbbb", "GPU-cccc", "GPU-dddd"]  # four fake GPUs (UUIDs)

# a job: claims a slot, prints it, holds it until its stdin closes
HOLDER = ("import sys; from pathlib import Path; from ddflow.gpu_slots import claim; "
          "slot = claim(sys.argv[2:], Path(sys.argv[1]), timeout=30, poll=0.05); "
          "print(slot.index, flush=True); sys.stdin.read()")


def _holders(lock_dir, n):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), *IDS], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    return procs, [int(p.stdout.readline()) for p in procs]


def _stop(procs):
    for p in procs:
        if p.poll() is None:
            p.stdin.close()
            p.wait(timeout=30)


def test_concurrent_jobs_claim_distinct_gpus_and_a_killed_jobs_gpu_is_free_again(tmp_path):
    procs, slots = _holders(tmp_path, 3)  # three jobs started at once
    try:
        assert sorted(slots) == [0, 1, 2]
        mine = gpu_slots.try_claim(IDS, tmp_path)
        assert mine.index == 3  # the one GPU left
        assert gpu_slots.try_claim(IDS, tmp_path) is None  # all four held
        with pytest.raises(DdflowError, match="all 4 GPUs stayed held"):
            gpu_slots.claim(IDS, tmp_path, timeout=0.2, poll=0.05)
        mine.release()
        again = gpu_slots.try_claim(IDS, tmp_path)
        assert again.index == 3  # a released GPU is claimed again
        crashed = procs[slots.index(1)]
        os.kill(crashed.pid, signal.SIGKILL)  # a job killed outright: the kernel drops its lock
        crashed.wait(timeout=30)
        after = gpu_slots.try_claim(IDS, tmp_path)
        assert after.index == 1
        after.release()
        again.release()
    finally:
        _stop(procs)


def test_lock_files_are_per_physical_gpu_whatever_order_a_job_sees(tmp_path):
    held = gpu_slots.try_claim(["GPU-cccc"], tmp_path)  # a job that sees only GPU-cccc (CUDA_VISIBLE_DEVICES=2)
    other = gpu_slots.try_claim(["GPU-cccc", "GPU-aaaa"], tmp_path)  # one that sees both, cccc first
    assert held.index == 0 and other.index == 1
    held.release()
    other.release()


def test_resolve_device_gives_each_job_its_claimed_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("DDFLOW_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(gpu_slots, "_held", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(IDS))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: type("Props", (), {"uuid": IDS[i]})())
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    procs, slots = _holders(tmp_path, 2)  # two jobs already hold GPUs 0 and 1
    try:
        assert sorted(slots) == [0, 1]
        assert resolve_device("cuda") == torch.device("cuda", 2) and chosen == [2]
        assert resolve_device("auto") == torch.device("cuda", 2)  # the same GPU for the rest of the job
    finally:
        gpu_slots._held.release()
        _stop(procs)
    monkeypatch.setattr(gpu_slots, "_held", None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one visible GPU (a SLURM job): no lock
    assert resolve_device("cuda") == torch.device("cuda")
    assert not list(tmp_path.glob("gpu-GPU-dddd.lock"))


def test_a_planted_link_is_refused_and_its_target_untouched(tmp_path):
    """A lock file that is a symbolic link (another user's plant in a shared folder) is never followed: the target
    keeps its bytes, and the claim is a clear error."""
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (locks / "gpu-GPU-aaaa.lock").symlink_to(victim)
    with pytest.raises(DdflowError, match="without following links"):
        gpu_slots.try_claim(IDS[:1], locks)
    assert victim.read_text() == "precious\n"


def test_a_lock_folder_others_can_enter_or_a_link_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(DdflowError, match="has mode 777; group and others must have no access"):
        gpu_slots.try_claim(IDS, shared)
    link = tmp_path / "link"
    link.symlink_to(shared)
    with pytest.raises(DdflowError, match="is not a directory"):
        gpu_slots.try_claim(IDS, link)
    fresh = tmp_path / "fresh"
    slot = gpu_slots.try_claim(IDS, fresh)  # created 0700 when absent
    assert oct(fresh.stat().st_mode & 0o777) == "0o700" and slot.index == 0
    slot.release()


def test_a_claim_times_out_with_the_holders_named(tmp_path, monkeypatch):
    held = gpu_slots.try_claim(IDS[:1], tmp_path)
    monkeypatch.setenv("DDFLOW_GPU_WAIT", "0.1")
    with pytest.raises(DdflowError, match=rf"stayed held by other jobs for 0.1 s .*pid {os.getpid()}.*DDFLOW_GPU_WAIT"):
        gpu_slots.claim(IDS[:1], tmp_path, poll=0.02)
    monkeypatch.setenv("DDFLOW_GPU_WAIT", "forever")
    with pytest.raises(DdflowError, match="DDFLOW_GPU_WAIT = 'forever'"):
        gpu_slots.claim(IDS[:1], tmp_path, poll=0.02)
    held.release()
