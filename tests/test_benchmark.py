"""dsla.benchmark at tiny sizes on the CPU: every part runs and reports sane numbers; and
tools/benchmark.py's command line."""

import functools
import json
import multiprocessing

import pytest
import torch

from dsla import benchmark
from tools import benchmark as benchmark_tool

SIZE = (128, 160)


def test_alternate_takes_turns_within_each_repetition_and_keeps_the_runs_after_the_warm_ups():
    calls = []

    def run(name):
        calls.append(name)
        return len(calls)

    times = benchmark.alternate({name: functools.partial(run, name) for name in "ab"}, reps=2)
    assert calls == ["a", "b"] * 3
    assert times == {"a": {"first": 1, "runs": [3, 5]}, "b": {"first": 2, "runs": [4, 6]}}


def _measure_ones(queue):
    queue.put(benchmark.measure_call("cpu", torch.ones, 16, 2**20))  # 64 MB of float32


def test_measure_call_times_the_call_and_its_peak_extra_memory():
    # In a fresh process: in a long one (the test suite), the allocator may reuse memory that is
    # still resident from earlier tests, and the resident set then does not grow.
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_measure_ones, args=(queue,))
    process.start()
    result = queue.get(timeout=120)
    process.join()
    assert result["seconds"] > 0 and 48 < result["peak_mb"] < 128


def test_models_are_timed_in_training_and_inference_for_both_detectors():
    rows = benchmark.benchmark_models("cpu", [SIZE], [1], reps=1)
    assert [(r["mode"], r["size"], r["batch"]) for r in rows] == [
        ("train", "128x160", 1),
        ("inference", "128x160", 1),
    ]
    for row in rows:
        assert list(row) == [
            *("device", "size", "batch", "mode"),
            *("DSLA_s", "DSLA_peak_mb", "FCOS_s", "FCOS_peak_mb", "DSLA/FCOS_time"),
        ]
        assert row["DSLA_s"] > 0 and row["FCOS_s"] > 0
        assert row["DSLA/FCOS_time"] == pytest.approx(row["DSLA_s"] / row["FCOS_s"])


def test_assignment_is_measured_per_box_count_with_the_right_point_count():
    rows = benchmark.benchmark_assignment("cpu", SIZE, [10, 100], reps=1)
    assert [r["num_boxes"] for r in rows] == [10, 100]
    # 128x160 input: 16*20 + 8*10 + 4*5 + 2*3 + 1*2 points on P3-P7.
    assert all(r["num_points"] == 320 + 80 + 20 + 6 + 2 for r in rows)
    assert all(r["seconds"] > 0 and r["batch"] == 1 for r in rows)


def test_profile_splits_a_training_step_into_stages():
    (row,) = benchmark.profile_dsla_step("cpu", SIZE, 1, reps=1)
    stages = ["backbone", "head", "assignment", "losses", "backward"]
    assert sum(row[f"{s}_pct"] for s in stages) == pytest.approx(100.0)
    assert row["train_step_s"] == pytest.approx(sum(row[f"{s}_s"] for s in stages))
    assert all(row[f"{s}_s"] > 0 for s in (*stages, "post-processing"))


def test_export_part_times_eager_torchscript_and_onnxruntime_and_checks_them(tmp_path):
    (row,) = benchmark.benchmark_export(["quickstart"], SIZE, 1, str(tmp_path), score_thresh=0.0)
    assert row["model"] == "quickstart" and row["size"] == "128x160" and row["detections"] > 0
    assert all(row[f"{k}_s"] > 0 for k in ("eager", "torchscript", "onnx"))
    assert row["torchscript_matches_eager"] and row["onnx_matches_eager"]
    assert (tmp_path / "quickstart" / "model.onnx").exists()


def test_speed_part_times_the_cpu_options_against_fp32_in_one_process():
    speed = benchmark.benchmark_speed(1, configs=["quickstart"], workers=[0, 1], quick=True)
    precisions = ["fp32", "bf16"] if speed["bf16_instructions"] else ["fp32"]
    variants = {"fp32", "channels_last"} | (
        {"bf16", "channels_last+bf16"} if speed["bf16_instructions"] else set()
    )
    for part in ("train", "inference"):
        rows = {r["variant"]: r for r in speed["rows"] if r["part"] == part}
        assert set(rows) == variants
        assert rows["fp32"]["speedup"] == 1.0
        for row in rows.values():
            assert row["median_s"] > 0 and row["min_s"] <= row["median_s"]
            assert row["speedup"] == pytest.approx(rows["fp32"]["median_s"] / row["median_s"])
        if part == "train":
            # Every variant's first step starts from the same weights on the same batch.
            for row in rows.values():
                assert row["first_loss"] == pytest.approx(rows["fp32"]["first_loss"], rel=0.02)
    loader = [r for r in speed["rows"] if r["part"] == "loader"]
    assert {(r["variant"], r["workers"]) for r in loader} == {
        (p, w) for p in precisions for w in (0, 1)
    }
    assert all(r["iter_s"] > 0 and r["data_s"] >= 0 for r in loader)


def test_report_prints_a_table_per_part_that_ran():
    report = benchmark.new_report()
    report["assignment"] = [{"device": "cpu", "size": "8x8", "num_boxes": 3, "seconds": 0.5}]
    report["speed"] = {"cpu": "CPU", "threads": 1, "rows": [{"part": "loader", "iter_s": 0.25}]}
    lines = benchmark.format_report(report).splitlines()
    assert lines[0].split() == "device | size | num_points | num_boxes | seconds | peak_mb".split()
    assert lines[2].split() == "cpu | 8x8 | | 3 | 0.500 |".split()
    assert lines[3] == "CPU speed options on CPU, 1 threads"
    assert lines[4].split()[:3] == ["config", "|", "variant"] and len(lines) == 7
    assert benchmark.format_report(benchmark.new_report()) == ""


def test_command_line_quick_mode_writes_every_part_s_key_and_prints_the_tables(tmp_path, capsys):
    out = tmp_path / "benchmark.json"
    argv = ["--quick", "--devices", "cpu", "--parts", "step", "speed", "--speed-parts", "inference"]
    benchmark_tool.main([*argv, "--output", str(out)])
    with open(out) as f:
        report = json.load(f)
    assert list(report) == [
        *("machine", "models", "assignment", "profile", "export", "amp", "step", "speed")
    ]
    (step,) = report["step"]
    assert (step["size"], step["batch"]) == ("128x160", 2)  # --quick caps --step-batch
    assert {r["part"] for r in report["speed"]["rows"]} == {"inference"}
    assert {r["size"] for r in report["speed"]["rows"]} == {"128x160"}
    printed = " ".join(capsys.readouterr().out.split())
    assert "device | size | batch | step_s | data_pct" in printed
    assert "CPU speed options on " in printed and "config | size | variant | median_s" in printed
