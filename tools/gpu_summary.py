#!/usr/bin/env python
"""
The summary of a GPU check (``tools/gpu_check.sh``, docs/gpu.md): reads what the check's steps left
in its work folder and writes ``summary.md`` and ``summary.json`` to the output folder, each target
marked pass or fail. It needs the standard library only, so it also reports a check whose
environment failed to import.

    python tools/gpu_summary.py --work WORK --output OUTDIR [--quickstart-iters N]

The work folder holds ``steps.tsv`` (per line: step, exit status, seconds taken, seconds allowed),
``tests_cuda.xml`` and ``tests.xml`` (pytest's JUnit XML), ``bench_amp.json``,
``bench_assignment.json`` and ``bench_step.json`` (reports of ``tools/benchmark.py``), and
``quickstart/quickstart_summary.json`` (``tools/quickstart.py``); any of them may be missing.
"""

import argparse
import json
import os
import xml.etree.ElementTree as ET

# The targets (docs/gpu.md).
RATIO_MAX = 1.00
ASSIGNMENT_MAX_PCT = 2.0
ASSIGNMENT_BOXES = 3000
STEP_BATCH = 16
# The authors' training step, 16 images on four RTX 2080 Ti, in seconds.
AUTHORS_STEP_S = 0.50
SYNC_COST_MAX_PCT = 2.0
TIMED_OUT = (124, 137)


def read_steps(path):
    """The steps of ``steps.tsv``: [{"step", "exit", "seconds", "budget_s", "status"}]."""
    steps = []
    if not os.path.exists(path):
        return steps
    with open(path) as f:
        for line in f:
            name, rc, seconds, budget = line.rstrip("\n").split("\t")
            rc = int(rc)
            if rc == 0:
                status = "ok"
            elif rc in TIMED_OUT:
                status = "time budget reached"
            else:
                status = f"failed (exit {rc})"
            steps.append(
                {
                    "step": name,
                    "exit": rc,
                    "seconds": int(seconds),
                    "budget_s": int(budget),
                    "status": status,
                }
            )
    return steps


def read_junit(path):
    """
    Counts of a pytest JUnit XML file, or None if there is none.

    Returns:
        dict: tests, passed, failures, errors, skipped, seconds, failed (the names of the tests
        that failed or errored).
    """
    if not os.path.exists(path):
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "seconds": 0.0, "failed": []}
    for suite in suites:
        for key in ("tests", "failures", "errors", "skipped"):
            counts[key] += int(suite.get(key, 0))
        counts["seconds"] += float(suite.get("time", 0))
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                counts["failed"].append(f"{case.get('classname')}::{case.get('name')}")
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def _read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _target(target, measured, passed):
    result = "missing" if passed is None else ("pass" if passed else "fail")
    return {"target": target, "measured": measured, "result": result}


def _step_row(step_rows, batch):
    return next((r for r in step_rows if r["batch"] == batch), None)


def evaluate_targets(amp_rows, assignment_rows, step_rows):
    """
    The targets of the GPU check against the benchmark's rows (``amp``, ``assignment`` and
    ``step`` parts of ``tools/benchmark.py``); empty lists where a part did not run.

    Returns:
        list of {"target", "measured", "result"}, ``result`` "pass", "fail" or "missing".
    """
    targets = []
    if amp_rows:
        worst = max(amp_rows, key=lambda r: r["DSLA/FCOS_time"])
        over = sum(r["DSLA/FCOS_time"] > RATIO_MAX for r in amp_rows)
        measured = (
            f"worst {worst['DSLA/FCOS_time']:.3f} ({worst['mode']}, batch {worst['batch']}, "
            f"{worst['amp']}); {over} of {len(amp_rows)} cases above {RATIO_MAX:.2f}"
        )
        targets.append(_target_ratio(measured, over == 0))
    else:
        targets.append(_target_ratio("not measured", None))

    step = _step_row(step_rows, STEP_BATCH)
    assignment = next(
        (
            r
            for r in assignment_rows
            if r["num_boxes"] == ASSIGNMENT_BOXES and r.get("batch", 1) == STEP_BATCH
        ),
        None,
    )
    name = (
        f"label assignment < {ASSIGNMENT_MAX_PCT:g} % of a {STEP_BATCH}-image step at "
        f"{ASSIGNMENT_BOXES} boxes per image"
    )
    if step and assignment:
        share = 100 * assignment["seconds"] / step["step_s"]
        measured = (
            f"{share:.2f} % ({assignment['seconds']:.4f} s of {step['step_s']:.3f} s, "
            f"{assignment['peak_mb']:.0f} MB)"
        )
        targets.append(_target(name, measured, share < ASSIGNMENT_MAX_PCT))
    else:
        targets.append(_target(name, "not measured", None))

    name = (
        f"{STEP_BATCH}-image R-50 training step faster than the authors' "
        f"{AUTHORS_STEP_S:.2f} s on four 2080 Ti"
    )
    if step:
        targets.append(_target(name, f"{step['step_s']:.3f} s", step["step_s"] < AUTHORS_STEP_S))
    else:
        targets.append(_target(name, "not measured", None))

    name = f"no host-device synchronization in the loss path costing over {SYNC_COST_MAX_PCT:g} %"
    if step and step.get("sync_cost_pct") is not None:
        measured = (
            f"at most {step['sync_cost_pct']:.2f} % of the step; "
            f"{step['syncs_loss_path']} synchronizations in the loss path"
        )
        targets.append(_target(name, measured, step["sync_cost_pct"] <= SYNC_COST_MAX_PCT))
    else:
        targets.append(_target(name, "not measured", None))
    return targets


def _target_ratio(measured, passed):
    return _target(
        f"DSLA/FCOS time ratio <= {RATIO_MAX:.2f}, training and inference", measured, passed
    )


def summarize(work, quickstart_iters=None):
    """Everything the check measured, as ``summary.json`` holds it."""
    bench = {
        part: _read_json(os.path.join(work, f"bench_{part}.json"))
        for part in ("amp", "assignment", "step")
    }
    rows = {part: (report or {}).get(part, []) for part, report in bench.items()}
    machine = next((r["machine"] for r in bench.values() if r), None)
    quickstart = _read_json(os.path.join(work, "quickstart", "quickstart_summary.json"))
    if quickstart is not None:
        quickstart["iterations"] = quickstart_iters
    return {
        "machine": machine,
        "targets": evaluate_targets(rows["amp"], rows["assignment"], rows["step"]),
        "steps": read_steps(os.path.join(work, "steps.tsv")),
        "tests": {
            "cuda": read_junit(os.path.join(work, "tests_cuda.xml")),
            "rest": read_junit(os.path.join(work, "tests.xml")),
        },
        "benchmark": rows,
        "quickstart": quickstart,
    }


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _tests_line(name, counts):
    if counts is None:
        return f"- {name}: no report (see tests.log)"
    line = (
        f"- {name}: {counts['passed']} passed, {counts['failures'] + counts['errors']} failed, "
        f"{counts['skipped']} skipped in {counts['seconds']:.0f} s"
    )
    if counts["failed"]:
        line += "; failed: " + ", ".join(counts["failed"])
    return line


def render_markdown(summary):
    """``summary.md``: the targets first, then the figures behind them."""
    machine = summary["machine"] or {}
    met = sum(t["result"] == "pass" for t in summary["targets"])
    steps_ok = all(s["exit"] == 0 for s in summary["steps"])
    lines = [
        f"# GPU check: {machine.get('cuda') or 'unknown GPU'}, torch {machine.get('torch', '?')}",
        "",
        f"{met} of {len(summary['targets'])} targets met; "
        + ("every step finished." if steps_ok else "not every step finished (see Steps)."),
        "",
        "## Targets",
        "",
        *_table(
            ["target", "measured", "result"],
            [(t["target"], t["measured"], t["result"]) for t in summary["targets"]],
        ),
        "",
        "## Steps",
        "",
        *_table(
            ["step", "seconds", "budget (s)", "status"],
            [(s["step"], s["seconds"], s["budget_s"], s["status"]) for s in summary["steps"]],
        ),
        "",
        "## Tests",
        "",
        _tests_line("CUDA tests (names with 'cuda')", summary["tests"]["cuda"]),
        _tests_line("the rest of the suite (pytest -x)", summary["tests"]["rest"]),
    ]
    amp = summary["benchmark"]["amp"]
    if amp:
        lines += ["", "## DSLA against FCOS (R-50-FPN, random weights)", ""]
        lines += _table(
            ["mode", "input", "batch", "precision", "DSLA (s)", "FCOS (s)", "ratio"]
            + ["DSLA peak (MB)", "FCOS peak (MB)"],
            [
                (r["mode"], r["size"], r["batch"], r["amp"], f"{r['DSLA_s']:.4f}")
                + (f"{r['FCOS_s']:.4f}", f"{r['DSLA/FCOS_time']:.3f}")
                + (f"{r['DSLA_peak_mb']:.0f}", f"{r['FCOS_peak_mb']:.0f}")
                for r in amp
            ],
        )
    step = _step_row(summary["benchmark"]["step"], STEP_BATCH)
    assignment = summary["benchmark"]["assignment"]
    if assignment:
        lines += ["", "## Label assignment against the number of boxes", ""]
        lines += _table(
            ["boxes per image", "images", "time (s)", "peak extra memory (MB)", "share of step"],
            [
                (r["num_boxes"], r.get("batch", 1), f"{r['seconds']:.4f}", f"{r['peak_mb']:.0f}")
                + (
                    f"{100 * r['seconds'] / step['step_s']:.2f} %"
                    if step and r.get("batch", 1) == step["batch"]
                    else "",
                )
                for r in assignment
            ],
        )
    for row in summary["benchmark"]["step"]:
        stages = [k[: -len("_pct")] for k in row if k.endswith("_pct") and k != "sync_cost_pct"]
        lines += ["", f"## Where a {row['batch']}-image training step goes ({row['size']})", ""]
        lines += [
            f"Whole step {row['step_s']:.3f} s, peak {row['step_peak_mb']:.0f} MB; stage by stage "
            f"(each synchronized) {row['staged_step_s']:.3f} s:",
            "",
        ]
        lines += _table(
            ["stage", "seconds", "share"],
            [(s, f"{row[s + '_s']:.4f}", f"{row[s + '_pct']:.1f} %") for s in stages],
        )
        if "syncs_loss_path" in row:
            sites = ", ".join(f"{k} ×{v}" for k, v in row["sync_sites_loss_path"].items())
            lines += [
                "",
                f"Host-device synchronizations in one step: {row['syncs_loss_path']} in the loss "
                f"path ({sites or 'none'}), {row['syncs_elsewhere']} elsewhere.",
            ]
            if "sync_cost_pct" in row:
                lines.append(
                    f"Loss path {row['loss_path_s']:.4f} s, GPU busy "
                    f"{row['loss_path_gpu_busy_s']:.4f} s of it, "
                    f"{row['loss_path_sync_calls']} blocking runtime calls "
                    f"({row['loss_path_sync_wait_s']:.4f} s); idle GPU at most "
                    f"{row['sync_cost_pct']:.2f} % of the step."
                )
            else:
                lines.append(f"Profiler failed: {row.get('profiler_error')}")
    quickstart = summary["quickstart"]
    lines += ["", "## Quick start", ""]
    if quickstart:
        lines.append(
            f"{quickstart.get('iterations') or '?'} iterations in {quickstart['minutes']:.1f} "
            f"minutes on {quickstart['device']}: box AP {quickstart['bbox/AP']:.1f} "
            f"(AP50 {quickstart['bbox/AP50']:.1f}, AP75 {quickstart['bbox/AP75']:.1f})."
        )
    else:
        lines.append("No result (see quickstart.log).")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", required=True, help="the check's work folder")
    parser.add_argument("--output", required=True, help="where summary.md and .json go")
    parser.add_argument("--quickstart-iters", type=int, default=None)
    args = parser.parse_args(argv)
    summary = summarize(args.work, args.quickstart_iters)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    markdown = render_markdown(summary)
    with open(os.path.join(args.output, "summary.md"), "w") as f:
        f.write(markdown)
    print(markdown, end="")
    return summary


if __name__ == "__main__":
    main()
