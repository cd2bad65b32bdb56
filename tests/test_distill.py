"""The distillation runner: resume after a kill, determinism, clear errors on broken files."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ddflow.errors import DdflowError
from ddflow.io import load_pt
from ddflow.records import DistilledSet, load_distilled
from ddflow.settings import distill_cell as run

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def tiny_hparams(tmp_path):
    """A copy of the repository's hparams with DM shrunk to a few cheap iterations."""
    d = tmp_path / "hparams"
    shutil.copytree(ROOT / "workflow" / "hparams", d)
    text = (d / "methods" / "dm.yaml").read_text()
    # the quick section's lines (checked: a changed hparams file must not leave these tests on the full preset)
    assert "  iterations: 40 " in text and "batch_real: 16" in text and "snapshots: [0, 10, 20]" in text
    text = text.replace("  iterations: 40 ", "  iterations: 6 ").replace("batch_real: 16", "batch_real: 4")
    (d / "methods" / "dm.yaml").write_text(text)
    return d


def _run(mnist5k_path, out, hp_dir, **kw):
    return run("dm", "mnist5k", 1, 0, "quick", CPU, mnist5k_path, out, hp_dir=hp_dir, **kw)


def test_killed_distillation_resumes_from_its_state_file_and_matches_an_uninterrupted_run(mnist5k_path, tmp_path,
                                                                                          tiny_hparams):
    full = _run(mnist5k_path, tmp_path / "full.pt", tiny_hparams)
    resume = tmp_path / "state.pt"
    out = tmp_path / "resumed.pt"
    assert _run(mnist5k_path, out, tiny_hparams, resume=resume, save_every=2, stop_after=5) is None
    assert not out.exists() and resume.exists()
    assert load_pt(resume)["iteration"] == 4  # the last save before the kill
    resumed = _run(mnist5k_path, out, tiny_hparams, resume=resume, save_every=2)
    assert out.exists() and not resume.exists()
    assert torch.equal(resumed.images, full.images)


def test_same_cell_twice_gives_the_same_file_contents(mnist5k_path, tmp_path, tiny_hparams):
    a = load_distilled(_run(mnist5k_path, tmp_path / "a.pt", tiny_hparams) and tmp_path / "a.pt").to_dict()
    b = load_distilled(_run(mnist5k_path, tmp_path / "b.pt", tiny_hparams) and tmp_path / "b.pt").to_dict()
    timing = {"seconds", "peak_rss_mb", "peak_cuda_mb"}
    assert set(a) == set(b)
    for k in set(a) - timing:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def test_a_resume_file_of_another_configuration_is_ignored(mnist5k_path, tmp_path, tiny_hparams):
    resume = tmp_path / "state.pt"
    torch.save({"identity": {"method": "other"}, "iteration": 3}, resume)
    result = _run(mnist5k_path, tmp_path / "o.pt", tiny_hparams, resume=resume)
    assert result.iterations == 6 and not resume.exists()


def test_corrupt_files_are_clear_errors_naming_the_path(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(DdflowError, match="bad.pt: corrupt"):
        load_distilled(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"images": torch.zeros(1)}, foreign)
    with pytest.raises(DdflowError, match="foreign.pt: not a ddflow distilled set"):
        load_distilled(foreign)
    with pytest.raises(DdflowError, match="missing"):
        load_distilled(tmp_path / "absent.pt")


def test_ipc_larger_than_the_smallest_class_fails_before_work(mnist5k_path, tmp_path):
    with pytest.raises(DdflowError, match="401"):
        run("random", "mnist5k", 401, 0, "quick", CPU, mnist5k_path, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_sigkilled_cli_job_resumes(mnist5k_path, tmp_path, tiny_hparams):
    """A real kill: the process dies mid-run, the output never appears, the rerun resumes from the state file."""
    text = (tiny_hparams / "methods" / "dm.yaml").read_text().replace("iterations: 6", "iterations: 40")
    (tiny_hparams / "methods" / "dm.yaml").write_text(text)
    out, resume = tmp_path / "out.pt", tmp_path / "resume.pt"
    cmd = [sys.executable, "-m", "ddflow", "distill", "--method", "dm", "--dataset", "mnist5k", "--ipc", "1",
           "--seed", "0", "--preset", "quick", "--data", str(mnist5k_path), "--out", str(out), "--resume", str(resume),
           "--save-every", "1", "--device", "cpu", "--threads", "1", "--hparams-dir", str(tiny_hparams)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not resume.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert resume.exists() and not out.exists()
    done_before = load_pt(resume)["iteration"]
    assert 0 < done_before < 40
    log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    assert f"resuming dm from iteration {done_before}" in log
    assert out.exists() and not resume.exists()
    assert load_distilled(out).iterations == 40


def test_snapshots_survive_a_kill_and_equal_those_of_an_uninterrupted_run(mnist5k_path, tmp_path, tiny_hparams):
    dm = tiny_hparams / "methods" / "dm.yaml"
    text = dm.read_text().replace("snapshots: [0, 10, 20]", "snapshots: [0, 2, 5, 99]")
    (tiny_hparams / "methods" / "dm.yaml").write_text(text)
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    _run(mnist5k_path, tmp_path / "full.pt", tiny_hparams, snapshot_dir=full_dir)
    assert sorted(p.name for p in full_dir.iterdir()) == ["it0.pt", "it2.pt", "it5.pt"]  # 99 > 6 iterations
    resume = tmp_path / "state.pt"
    _run(mnist5k_path, tmp_path / "r.pt", tiny_hparams, resume=resume, save_every=4, stop_after=5,
         snapshot_dir=resumed_dir)
    assert not resumed_dir.exists()  # snapshots are staged beside the resume file until the job completes
    _run(mnist5k_path, tmp_path / "r.pt", tiny_hparams, resume=resume, save_every=4, snapshot_dir=resumed_dir)
    for name in ("it0.pt", "it2.pt", "it5.pt"):
        a, b = load_distilled(full_dir / name), load_distilled(resumed_dir / name)
        assert a.iterations == b.iterations == int(name[2:-3])
        assert torch.equal(a.images, b.images)
    assert not (tmp_path / "state.pt.snapshots").exists()


def test_a_kill_between_delivering_snapshots_and_writing_the_output_leaves_a_rerun_that_finishes(
        mnist5k_path, tmp_path, tiny_hparams, monkeypatch):
    """Before: the snapshots were moved out of the staging folder, so every rerun after such a kill (resumed from the
    resume file) failed with "snapshot of iteration 0 missing"."""
    text = (tiny_hparams / "methods" / "dm.yaml").read_text().replace("snapshots: [0, 10, 20]", "snapshots: [0, 2, 5]")
    (tiny_hparams / "methods" / "dm.yaml").write_text(text)
    full_dir = tmp_path / "full"
    full = _run(mnist5k_path, tmp_path / "full.pt", tiny_hparams, snapshot_dir=full_dir)
    out, resume, snaps = tmp_path / "out.pt", tmp_path / "state.pt", tmp_path / "snaps"
    kw = {"resume": resume, "save_every": 4, "snapshot_dir": snaps}
    real_save = DistilledSet.save

    def killed_at_the_output(self, path):
        if Path(path) == out:
            raise KeyboardInterrupt("killed")
        real_save(self, path)

    def kill_then_rerun():
        monkeypatch.setattr(DistilledSet, "save", killed_at_the_output)
        with pytest.raises(KeyboardInterrupt):
            _run(mnist5k_path, out, tiny_hparams, **kw)
        monkeypatch.setattr(DistilledSet, "save", real_save)
        assert not out.exists() and load_pt(resume)["iteration"] == 4
        assert sorted(p.name for p in snaps.iterdir()) == ["it0.pt", "it2.pt", "it5.pt"]

    def check():
        result = _run(mnist5k_path, out, tiny_hparams, **kw)
        assert torch.equal(result.images, full.images) and not resume.exists()
        assert not (tmp_path / "state.pt.snapshots").exists()
        for name in ("it0.pt", "it2.pt", "it5.pt"):
            assert torch.equal(load_distilled(snaps / name).images, load_distilled(full_dir / name).images)

    kill_then_rerun()
    check()                                              # a plain rerun
    out.unlink()
    kill_then_rerun()
    shutil.rmtree(snaps)                                 # Snakemake removes an incomplete job's output folder
    check()
    out.unlink()
    kill_then_rerun()
    staged = tmp_path / "state.pt.snapshots"
    for name in ("it0.pt", "it2.pt"):
        (staged / name).unlink()                         # moved, not copied (a job of an earlier version)
    check()
    # a snapshot of another cell in the folder is not taken for this one's
    out.unlink()
    kill_then_rerun()
    (staged / "it0.pt").unlink()
    other = load_distilled(snaps / "it0.pt")
    other.seed = 1
    other.save(snaps / "it0.pt")
    with pytest.raises(DdflowError, match="snapshot of iteration 0 missing"):
        _run(mnist5k_path, out, tiny_hparams, **kw)


def test_a_corrupt_resume_file_is_moved_aside_and_the_run_starts_afresh(mnist5k_path, tmp_path, tiny_hparams, caplog):
    full = _run(mnist5k_path, tmp_path / "full.pt", tiny_hparams)
    resume = tmp_path / "state.pt"
    resume.write_bytes(b"half a torch file")
    out = _run(mnist5k_path, tmp_path / "r.pt", tiny_hparams, resume=resume)
    assert torch.equal(out.images, full.images)  # started afresh, same result as an uninterrupted run
    assert (tmp_path / "state.pt.corrupt").read_bytes() == b"half a torch file" and not resume.exists()
    assert "moved aside" in caplog.text


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_respect_the_umask(tmp_path, umask, mode):
    from ddflow.io import save_pt, write_json
    old = os.umask(umask)
    try:
        save_pt({"a": 1}, tmp_path / "x.pt")
        write_json({"a": 1}, tmp_path / "x.json")
    finally:
        os.umask(old)
    assert (tmp_path / "x.pt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == mode


def test_progress_lines_show_an_eta_and_the_rate_since_a_resume(caplog, monkeypatch):
    import logging

    from ddflow import progress as P
    clock = iter([100.0, 110.0, 120.0])
    monkeypatch.setattr(P.time, "time", lambda: next(clock))
    monkeypatch.setattr(P, "tqdm", None)
    with caplog.at_level(logging.INFO, logger="ddflow"):
        p = P.Progress(100, "distill x", every_s=0.0, start=60)  # resumed at step 60 (t = 100 s)
        p.update(70, loss=torch.tensor(0.5))                     # 10 steps in 10 s since the resume: 1/s
    line = caplog.records[-1].getMessage()
    assert "70/100 (1.00/s, ETA 0:00:30) loss=0.5" in line, line
    assert P.eta(3725, 1.0) == "1:02:05" and P.eta(5, 0.0) == "?"


def test_records_cells_and_logs_carry_their_provenance(mnist5k_path, mnist5k, tmp_path, tiny_hparams, caplog):
    import logging

    from ddflow.cli import main
    from ddflow.protocols import protocol_settings
    from ddflow.stages.evaluate import evaluate_record as evaluate_cell
    rec = _run(mnist5k_path, tmp_path / "dm.pt", tiny_hparams)
    prov = load_distilled(tmp_path / "dm.pt").extra["provenance"]
    assert prov["device"] == "cpu" and prov["torch"] == torch.__version__ and prov["ddflow"]
    assert set(prov) == {"device", "python", "torch", "cuda", "torch_threads", "ddflow", "git_commit", "workflow_dir",
                         "workflow_commit"}
    assert prov["torch_threads"] == torch.get_num_threads()
    settings = dict(protocol_settings("dm", "mnist5k", 1, "quick", "dc", tiny_hparams), epochs=1, models=1)
    assert evaluate_cell(rec, "dc", settings, mnist5k, CPU)["provenance"] == prov
    with caplog.at_level(logging.INFO, logger="ddflow"):
        assert main(["grid", "--distilled", str(tmp_path / "dm.pt"), "--out", str(tmp_path / "g.png")]) == 0
    assert caplog.records[0].getMessage().startswith('ddflow grid: {"device": null, "python"')
