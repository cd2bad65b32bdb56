"""`python -m ddflow smoke` by role: the command and its steps (command.py), its Markdown report and verdicts
(report.py), the timed distillation loop it shares with benchmarks/bench.py (speed.py), and the official reference
numbers as data (references.py reads workflow/smoke.yaml)."""
from .command import OFFICIAL_DEVICE, OFFICIAL_SPEED, REFERENCES, STEPS, run_smoke, same_device_kind, tiny_datasets

__all__ = ["OFFICIAL_DEVICE", "OFFICIAL_SPEED", "REFERENCES", "STEPS", "run_smoke", "same_device_kind",
           "tiny_datasets"]
