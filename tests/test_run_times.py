"""benchmarks/run_times.py: job-seconds by rule from a run's .snakemake/metadata, a job with several outputs
counted once."""
from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("run_times", ROOT / "benchmarks" / "run_times.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _meta(folder: Path, output: str, rule: str, start: float, end: float, cmd: str) -> None:
    name = base64.b64encode(output.encode()).decode()
    (folder / name).write_text(json.dumps({"rule": rule, "starttime": start, "endtime": end, "shellcmd": cmd,
                                           "log": [f"logs/{cmd}.log"]}))


def test_a_job_with_two_outputs_counts_once_and_idle_time_is_what_the_cores_did_not_run(tmp_path):
    folder = tmp_path / ".snakemake" / "metadata"
    folder.mkdir(parents=True)
    _meta(folder, "results/a.pt", "distill", 0.0, 30.0, "a")
    _meta(folder, "results/a", "distill", 0.000002, 30.0, "a")   # the same job's second output
    _meta(folder, "results/b.json", "evaluate", 30.0, 40.0, "b")
    _meta(folder, "results/c.json", "evaluate", 0.0, 20.0, "c")
    rt = _module()
    jobs = rt.jobs(tmp_path)
    assert [(j["rule"], sorted(j["outputs"])) for j in jobs][0] in (("distill", ["results/a", "results/a.pt"]),
                                                                    ("evaluate", ["results/c.json"]))
    assert len(jobs) == 3
    text = rt.summary(jobs, cores=2)
    assert "| evaluate | 2 | 30 | 20 |" in text and "| distill | 1 | 30 | 30 |" in text
    assert "| all | 3 | 60 | |" in text
    assert "span (first start to last end) 40 s; idle core-seconds at --cores 2: 20" in text
