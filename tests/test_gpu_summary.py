"""tools/gpu_summary.py: the GPU check's targets marked pass or fail, and the summary files."""

import json

import pytest

from tools import gpu_summary


def _amp(ratio, mode="train", batch=16, amp="fp32"):
    return {
        "device": "cuda",
        "size": "800x1333",
        "batch": batch,
        "mode": mode,
        "amp": amp,
        "DSLA_s": ratio,
        "FCOS_s": 1.0,
        "DSLA/FCOS_time": ratio,
        "DSLA_peak_mb": 100.0,
        "FCOS_peak_mb": 110.0,
    }


def _assignment(seconds, num_boxes=3000, batch=16):
    return {"num_boxes": num_boxes, "batch": batch, "seconds": seconds, "peak_mb": 40.0}


def _step(step_s, sync_cost_pct, batch=16):
    stages = dict.fromkeys(("data", "backbone", "losses"), step_s / 3)
    return {
        "device": "cuda",
        "size": "800x1333",
        "batch": batch,
        "step_s": step_s,
        "step_peak_mb": 20000.0,
        "staged_step_s": step_s,
        **{f"{s}_s": t for s, t in stages.items()},
        **{f"{s}_pct": 100 / 3 for s in stages},
        "syncs_loss_path": 3,
        "syncs_elsewhere": 16,
        "sync_sites_loss_path": {"losses.py:10": 3},
        "sync_sites_elsewhere": {},
        "loss_path_s": 0.02,
        "loss_path_gpu_busy_s": 0.01,
        "loss_path_sync_calls": 3,
        "loss_path_sync_wait_s": 0.005,
        "sync_cost_pct": sync_cost_pct,
    }


def _results(targets):
    return [t["result"] for t in targets]


def test_targets_pass_when_every_figure_is_within_its_threshold():
    targets = gpu_summary.evaluate_targets(
        [_amp(0.98), _amp(1.0, mode="inference", batch=1, amp="bf16")],
        [_assignment(0.005), _assignment(0.5, batch=1)],
        [_step(0.4, 1.5)],
    )
    assert _results(targets) == ["pass"] * 4
    # 0.005 s of a 0.4 s step.
    assert targets[1]["measured"].startswith("1.25 %")


def test_each_target_fails_on_its_own_figure():
    targets = gpu_summary.evaluate_targets(
        [_amp(0.98), _amp(1.02, mode="inference", batch=1, amp="fp16")],
        [_assignment(0.01)],
        [_step(0.45, 2.5)],
    )
    assert _results(targets) == ["fail", "fail", "pass", "fail"]
    assert "1.020 (inference, batch 1, fp16); 1 of 2" in targets[0]["measured"]
    assert _results(gpu_summary.evaluate_targets([], [], [_step(0.6, 0.1)]))[2] == "fail"


def test_targets_without_their_figures_are_missing_not_passed():
    assert _results(gpu_summary.evaluate_targets([], [], [])) == ["missing"] * 4
    # The assignment is judged at 3000 boxes on 16 images, against the 16-image step.
    targets = gpu_summary.evaluate_targets([], [_assignment(0.001, batch=1)], [_step(0.4, 0.1)])
    assert targets[1]["result"] == "missing"
    step = _step(0.4, None)
    assert gpu_summary.evaluate_targets([], [], [step])[3]["result"] == "missing"


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4" time="12.5">
<testcase classname="tests.test_a" name="test_ok" time="1"/>
<testcase classname="tests.test_a" name="test_ok2" time="1"/>
<testcase classname="tests.test_a" name="test_bad" time="1">
<failure message="x">x</failure></testcase>
<testcase classname="tests.test_b" name="test_skip" time="0"><skipped message="no"/></testcase>
</testsuite></testsuites>
"""


def test_junit_counts_and_failed_test_names(tmp_path):
    path = tmp_path / "tests.xml"
    path.write_text(JUNIT)
    counts = gpu_summary.read_junit(str(path))
    assert (counts["passed"], counts["failures"], counts["skipped"]) == (2, 1, 1)
    assert counts["failed"] == ["tests.test_a::test_bad"]
    assert counts["seconds"] == pytest.approx(12.5)
    assert gpu_summary.read_junit(str(tmp_path / "missing.xml")) is None


def _write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_summary_of_a_work_folder_names_targets_steps_and_tests(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    machine = {"torch": "2.11.0", "cuda": "NVIDIA H200"}
    _write_json(work / "bench_amp.json", {"machine": machine, "amp": [_amp(0.99)]})
    _write_json(work / "bench_step.json", {"machine": machine, "step": [_step(0.3, 0.5)]})
    (work / "tests.xml").write_text(JUNIT)
    (work / "steps.tsv").write_text(
        "setup\t0\t5\t30\ntests\t1\t80\t90\nbenchmark-assignment\t124\t60\t60\n"
    )

    gpu_summary.main(["--work", str(work), "--output", str(out), "--quickstart-iters", "100"])
    summary = json.loads((out / "summary.json").read_text())
    assert _results(summary["targets"]) == ["pass", "missing", "pass", "pass"]
    assert [s["status"] for s in summary["steps"]] == [
        "ok",
        "failed (exit 1)",
        "time budget reached",
    ]
    assert summary["tests"]["cuda"] is None and summary["tests"]["rest"]["failures"] == 1
    markdown = (out / "summary.md").read_text()
    assert markdown.startswith("# GPU check: NVIDIA H200, torch 2.11.0")
    assert "3 of 4 targets met; not every step finished" in markdown
    assert "tests.test_a::test_bad" in markdown
    assert "| train | 800x1333 | 16 | fp32 | 0.9900 |" in markdown
    assert "No result (see quickstart.log)." in markdown
