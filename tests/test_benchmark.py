"""tools/benchmark.py in its quick mode: every part runs and reports sane numbers."""

import json

import pytest

from tools import benchmark


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "benchmark.json"
    benchmark.main(["--quick", "--devices", "cpu", "--output", str(out)])
    with open(out) as f:
        return json.load(f)


def test_models_are_timed_in_training_and_inference_for_both_detectors(report):
    modes = {(r["mode"], r["size"], r["batch"]) for r in report["models"]}
    assert modes == {("train", "128x160", 1), ("inference", "128x160", 1)}
    for row in report["models"]:
        assert row["DSLA_s"] > 0 and row["FCOS_s"] > 0
        assert row["DSLA/FCOS_time"] == pytest.approx(row["DSLA_s"] / row["FCOS_s"])
        assert {"DSLA_peak_mb", "FCOS_peak_mb", "device", "size", "batch"} <= set(row)


def test_assignment_is_measured_per_box_count_with_the_right_point_count(report):
    rows = report["assignment"]
    assert [r["num_boxes"] for r in rows] == [10, 100]
    # 128x160 input: 16*20 + 8*10 + 4*5 + 2*3 + 1*2 points on P3-P7.
    assert all(r["num_points"] == 320 + 80 + 20 + 6 + 2 for r in rows)
    assert all(r["seconds"] > 0 for r in rows)


def test_profile_splits_a_training_step_into_stages(report):
    (row,) = report["profile"]
    stages = ["backbone", "head", "assignment", "losses", "backward"]
    assert sum(row[f"{s}_pct"] for s in stages) == pytest.approx(100.0)
    assert row["train_step_s"] == pytest.approx(sum(row[f"{s}_s"] for s in stages))
    assert all(row[f"{s}_s"] > 0 for s in (*stages, "post-processing"))


def test_export_part_times_eager_torchscript_and_onnxruntime_and_checks_them(tmp_path):
    out = tmp_path / "export.json"
    benchmark.main(
        [
            "--quick",
            "--parts",
            "export",
            "--export-models",
            "quickstart",
            "--export-score-thresh",
            "0.0",
            "--output",
            str(out),
        ]
    )
    with open(out) as f:
        (row,) = json.load(f)["export"]
    assert row["model"] == "quickstart" and row["size"] == "128x160" and row["detections"] > 0
    assert all(row[f"{k}_s"] > 0 for k in ("eager", "torchscript", "onnx"))
    assert row["torchscript_matches_eager"] and row["onnx_matches_eager"]
    assert (tmp_path / "export_benchmark" / "quickstart" / "model.onnx").exists()


def test_speed_part_times_the_cpu_options_against_fp32_in_one_process(tmp_path):
    out = tmp_path / "speed.json"
    benchmark.main(
        [
            "--quick",
            "--parts",
            "speed",
            "--speed-configs",
            "quickstart",
            "--speed-workers",
            "0",
            "1",
            "--output",
            str(out),
        ]
    )
    with open(out) as f:
        speed = json.load(f)["speed"]
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
