"""The smoke test's report (`python -m ddflow smoke`, ddflow.smoke.command): every accuracy check beside the official
code's figure with its verdict, every speed beside the official figure with the ratio official / ours, as Markdown.

Verdict: an accuracy passes when |ours - official| <= max(1.0, 2 sigma), sigma = the larger of the two standard
deviations (ours over the evaluated models, population std as in every ddflow cell; the official one as reported).
A tiny run (toy sizes on a CPU) is not comparable with the references: its rows say so, with no pass or fail. The
speed ratio official / ours is printed only against a reference measured on the same kind of device (the official
figures: one H100) at the official scale; elsewhere the two figures stand side by side without a ratio.
"""
from __future__ import annotations

from typing import Any

CRITERION = "|ours - official| <= max(1.0, 2 sigma), sigma = the larger of the two stds"


def verdict(mean: float, std: float, ref_mean: float, ref_std: float) -> dict[str, Any]:
    sigma = max(float(std), float(ref_std))
    tolerance = max(1.0, 2.0 * sigma)
    difference = float(mean) - float(ref_mean)
    return {"difference": difference, "sigma": sigma, "tolerance": tolerance, "pass": abs(difference) <= tolerance}


def _pm(value: dict[str, Any] | None, digits: int = 2) -> str:
    if not value:
        return "-"
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f}"


def _iterations(row: dict[str, Any]) -> str:
    text = f"{row.get('iterations', 0)}/{row['planned_iterations']}"
    return text + " (truncated)" if row.get("truncated") else text


def _verdict_text(row: dict[str, Any], comparable: bool) -> str:
    if not row.get("reached", True):
        return "not reached (time budget)"
    word = ("PASS" if row["pass"] else "FAIL") if comparable else "not comparable (tiny run)"
    return word + (", truncated" if row.get("truncated") else "")


def accuracy_lines(rows: list[dict[str, Any]], comparable: bool) -> list[str]:
    lines = [f"## Accuracy (pass: {CRITERION})", "",
             "| check | iterations | models | ours | official code | paper | ours - official | tolerance | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.get("reached", True):
            lines.append(f"| {r['label']} | {_iterations(r)} | - | - | {_pm(r['official'])} | {_pm(r.get('paper'), 1)} "
                         f"| - | - | {_verdict_text(r, comparable)} |")
            continue
        lines.append(f"| {r['label']} | {_iterations(r)} | {r['models']} | {_pm(r)} | {_pm(r['official'])} | "
                     f"{_pm(r.get('paper'), 1)} | {r['difference']:+.2f} | {r['tolerance']:.2f} (σ {r['sigma']:.2f}) | "
                     f"{_verdict_text(r, comparable)} |")
    lines += [""] + [f"- {r['label']}: official = {r['official']['source']}"
                     + (f"; paper = {r['paper']['source']}" if r.get("paper") else "") for r in rows]
    return lines


def speed_lines(rows: list[dict[str, Any]], report: dict[str, Any]) -> list[str]:
    title = "## Speed (official / ours: above 1 = faster than the official code)"
    if not report.get("speed_comparable"):
        why = ("a tiny run" if not report["comparable"] else
               f"the official figures were measured on an {report.get('official_device', 'H100')}, this run on "
               f"{report['environment']['device']}")
        title = f"## Speed (not comparable: {why}; no ratios)"
    lines = [title, "", "| measurement | ours | official code | official / ours | notes |", "|---|---|---|---|---|"]
    for r in rows:
        note = r.get("note", "") + (" (truncated)" if r.get("truncated") and r.get("ours") is not None else "")
        ours = "-" if r.get("ours") is None else f"{r['ours']:.4g}"
        ratio = "-" if r.get("ratio") is None else f"{r['ratio']:.2f}x"
        lines.append(f"| {r['label']} | {ours} | {r['official']:.4g} | {ratio} | {note} |")
    lines += [""] + [f"- {r['label']}: official = {r['source']}" for r in rows]
    return lines


def step_lines(steps: dict[str, dict[str, Any]], budgets: dict[str, float | None]) -> list[str]:
    lines = ["## Steps", "", "| step | seconds | budget (s) | status |", "|---|---|---|---|"]
    for name, s in steps.items():
        budget = budgets.get(name)
        status = f"error: {s['error']}" if s.get("error") else ("truncated" if s.get("truncated") else "done")
        lines.append(f"| {name} | {s['seconds']:.1f} | {budget if budget is not None else '-'} | {status} |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    env, comparable = report["environment"], report["comparable"]
    commit = env.get("git_commit") or "not a checkout"
    head = [f"# ddflow smoke test ({report['mode']})", "",
            f"device: {env['device']} · python {env['python']} · torch {env['torch']} · ddflow {env['ddflow']} · "
            f"commit {commit}", "",
            f"wall time: {report['wall_s']:.1f} s (limit {report['limit_s']} s: "
            f"{'within' if report['wall_s'] <= report['limit_s'] else 'OVER'})", "",
            f"official code = {report['official']}; paper = the paper's table.", ""]
    body = accuracy_lines(report["accuracy"], comparable) + [""] + speed_lines(report["speed"], report)
    return "\n".join(head + body + [""] + step_lines(report["steps"], report["budgets_s"])) + "\n"
