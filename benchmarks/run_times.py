"""Where a finished Snakemake run spent its time: job-seconds by rule, from the run's .snakemake/metadata.

Snakemake keeps one metadata file per output (the file name is the output path, base64-encoded) with the job's
rule, start and end time, shell command and log; a job with several outputs appears once per output (with start
times a few microseconds apart), so a job is counted once per (rule, shell command, log). Prints jobs, job-seconds
and the longest job per rule, the sum, the span from the first start to the last end, and how long the cores were
idle in that span: with `--cores N`, N x span - job-seconds (a job of several threads counts once, so this is a
lower bound on the idle core-time).

    python benchmarks/run_times.py /path/to/run --cores 2
"""
from __future__ import annotations

import argparse
import base64
import json
from collections import defaultdict
from pathlib import Path


def jobs(run: str | Path) -> list[dict]:
    """Every finished job of the run in `run` (its folder): rule, start, end, seconds and outputs, by start."""
    folder = Path(run) / ".snakemake" / "metadata"
    if not folder.is_dir():
        raise SystemExit(f"{folder}: no Snakemake metadata (give the folder a run finished in)")
    found: dict[tuple, dict] = {}
    for f in sorted(folder.iterdir()):
        meta = json.loads(f.read_text())
        if meta.get("starttime") is None or meta.get("endtime") is None:
            continue
        key = (meta["rule"], meta.get("shellcmd"), tuple(meta.get("log") or ()))
        job = found.setdefault(key, {"rule": meta["rule"], "start": meta["starttime"], "end": meta["endtime"],
                                     "seconds": meta["endtime"] - meta["starttime"], "outputs": []})
        job["outputs"].append(base64.b64decode(f.name.encode()).decode())
    return sorted(found.values(), key=lambda j: j["start"])


def summary(all_jobs: list[dict], cores: int) -> str:
    by_rule: dict[str, list[dict]] = defaultdict(list)
    for j in all_jobs:
        by_rule[j["rule"]].append(j)
    lines = ["| rule | jobs | job-seconds | longest job (s) |", "|---|---|---|---|"]
    for rule, js in sorted(by_rule.items(), key=lambda kv: -sum(j["seconds"] for j in kv[1])):
        lines.append(f"| {rule} | {len(js)} | {sum(j['seconds'] for j in js):,.0f} | "
                     f"{max(j['seconds'] for j in js):.0f} |")
    total = sum(j["seconds"] for j in all_jobs)
    span = max(j["end"] for j in all_jobs) - min(j["start"] for j in all_jobs) if all_jobs else 0.0
    lines.append(f"| all | {len(all_jobs)} | {total:,.0f} | |")
    lines.append("")
    lines.append(f"span (first start to last end) {span:,.0f} s; idle core-seconds at --cores {cores}: "
                 f"{max(0.0, cores * span - total):,.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="the folder the run finished in (it holds .snakemake/metadata)")
    p.add_argument("--cores", type=int, default=2)
    a = p.parse_args(argv)
    print(summary(jobs(a.run), a.cores))


if __name__ == "__main__":
    main()
