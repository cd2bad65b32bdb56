"""Every `snakemake` command README shows dry-runs (`-n`) as written, so the README cannot rot: a command whose
arguments Snakemake cannot parse (e.g. a target swallowed by `--config`), an unknown method, table or key fails
here. `--report` needs results and is left out."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.workflow


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("&&")[-1].strip()
            if line.startswith("snakemake "):
                found.append(line)
    found += re.findall(r"`(snakemake --(?:cores|profile)[^`]*)`", text)
    return [c for c in dict.fromkeys(found) if "--report" not in c]


def test_readme_shows_the_commands_this_test_runs():
    cmds = readme_commands()
    assert len(cmds) >= 6, cmds
    assert any("results/tables/dream_t1.md" in c for c in cmds) and any("--profile" in c for c in cmds)


@pytest.mark.parametrize("command", readme_commands())
def test_readme_snakemake_command_dry_runs(command, tmp_path):
    args = shlex.split(command, comments=True)[1:]
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args, "-n", "--quiet", "rules", "--directory",
                           str(tmp_path), "-s", str(ROOT / "Snakefile"), "--configfile", str(ROOT / "config.yaml")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
