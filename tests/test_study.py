"""dsla.study (tools/study.py, make study): variants, run planning, resume, crash isolation,
report."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from dsla.study import (
    BUILTIN_VARIANTS,
    RunFailed,
    StudyDataset,
    Variant,
    aggregate,
    argument_parser,
    collect_results,
    datasets_from_args,
    execute_runs,
    format_override_value,
    load_variant_spec,
    main,
    parse_override_value,
    parse_variant,
    plan_runs,
    render_markdown,
    run_study,
    study_dataset,
    variants_from_args,
)

from conftest import load_config, shapes_env, write_coco_dataset

BUILTINS = {v.name: v for v in BUILTIN_VARIANTS}
# Tiny runs: 64-pixel inputs, batch 2, no loader workers.
TINY = [
    ("SOLVER.IMS_PER_BATCH", 2),
    ("SOLVER.WARMUP_ITERS", 1),
    ("DATALOADER.NUM_WORKERS", 0),
    ("MODEL.DSLA.SCORE_THRESH_TEST", 0.0),
    ("MODEL.FCOS.SCORE_THRESH_TEST", 0.0),
]


@pytest.fixture
def coco_pair(tmp_path):
    """A registered COCO-format family ``study_coco_train`` / ``study_coco_val`` of 2 classes."""
    json_path, image_root = write_coco_dataset(str(tmp_path / "coco"), num_images=3, num_classes=2)
    names = ("study_coco_train", "study_coco_val")
    yield [(name, json_path, image_root) for name in names]
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_builtin_variants_are_fcos_dsla_and_each_ablation_with_one_change():
    assert list(BUILTINS) == [
        "fcos",
        "dsla",
        "fcos-dsla-ranges",
        "retinanet",
        "dsla-no-coupling",
        "dsla-iou-only",
        "dsla-no-relaxation",
        "dsla-no-core-zone",
        "dsla-no-cs-offset",
        "dsla-quarter-ranges",
        "dsla-fcos-ranges",
    ]
    assert BUILTINS["fcos"].config_file.startswith("FCOS-Baseline/") and BUILTINS["fcos"].opts == ()
    assert BUILTINS["dsla"].opts == ()
    assert dict(BUILTINS["dsla-no-cs-offset"].opts) == {
        "MODEL.DSLA.CENTER_SAMPLING_RADIUS": 0.0,
        "MODEL.DSLA.POINT_OFFSET": 0.0,
    }
    quarter = dict(BUILTINS["dsla-quarter-ranges"].opts)
    assert (
        quarter["MODEL.DSLA.REGRESS_RANGES"][0] == [0.0, 16.0]
        and quarter["MODEL.DSLA.POINT_OFFSET"] == 0.0
    )
    ranges = dict(BUILTINS["dsla-fcos-ranges"].opts)["MODEL.DSLA.REGRESS_RANGES"]
    assert ranges[0] == [0.0, 64.0] and ranges[-1] == [512.0, math.inf]


def test_equal_footing_variant_gives_fcos_the_ranges_dsla_ships_with():
    fcos = BUILTINS["fcos-dsla-ranges"]
    fcos_cfg = load_config("configs/" + fcos.config_file, fcos.flat_opts())
    for dsla_config in ("dsla_quickstart_shapes.yaml", "dsla_mobilenet_v2_trees.yaml"):
        dsla_cfg = load_config(f"configs/DSLA/{dsla_config}")
        assert fcos_cfg.MODEL.FCOS.REGRESS_RANGES == dsla_cfg.MODEL.DSLA.REGRESS_RANGES
        assert (
            fcos_cfg.MODEL.FCOS.CENTER_SAMPLING_RADIUS == dsla_cfg.MODEL.DSLA.CENTER_SAMPLING_RADIUS
        )
        assert fcos_cfg.MODEL.FCOS.POINT_OFFSET == dsla_cfg.MODEL.DSLA.POINT_OFFSET
    assert load_config("configs/" + BUILTINS["fcos"].config_file).MODEL.FCOS.REGRESS_RANGES[0] == [
        0,
        64,
    ]


def test_the_trees_dataset_trains_each_variant_on_the_real_images_config(tmp_path):
    trees = study_dataset("trees")
    assert (trees.train, trees.test) == ("neon_trees_train", "neon_trees_val")
    runs = plan_runs(
        [trees], [BUILTINS["dsla-no-coupling"], BUILTINS["fcos-dsla-ranges"]], [1], 7, str(tmp_path)
    )
    dsla, fcos = (run.build_cfg() for run in runs)
    assert runs[0].config_file == "DSLA/dsla_mobilenet_v2_trees.yaml"
    assert runs[1].config_file == "FCOS-Baseline/fcos_mobilenet_v2_trees.yaml"
    assert (
        dsla.MODEL.BACKBONE.NAME
        == fcos.MODEL.BACKBONE.NAME
        == "build_dsla_mobilenet_v2_fpn_backbone"
    )
    assert dsla.MODEL.DSLA.IOU_COUPLING is False and fcos.MODEL.FCOS.REGRESS_RANGES[0] == [
        0.0,
        32.0,
    ]
    assert dsla.SOLVER.MAX_ITER == fcos.SOLVER.MAX_ITER == 7
    assert runs[0].record()["config_file"] == "DSLA/dsla_mobilenet_v2_trees.yaml"
    other = Variant("other", "DSLA/dsla_R_50_FPN_1x.yaml")
    with pytest.raises(ValueError, match="none for variants based on"):
        plan_runs([trees], [other], [1], 7, str(tmp_path))


def test_variant_from_the_command_line_keeps_its_base_and_reads_lists_and_yaml_inf():
    variant = parse_variant(
        "r32=dsla-no-cs-offset MODEL.DSLA.REGRESS_RANGES "
        "[[0,32],[32,64],[64,128],[128,256],[256,.inf]] "
        "INPUT.MIN_SIZE_TRAIN (128,) MODEL.DSLA.IOU_COUPLING False 'DATASETS.TRAIN' \"('a', 'b')\"",
        BUILTINS,
    )
    assert variant.name == "r32" and variant.config_file == BUILTINS["dsla"].config_file
    opts = dict(variant.opts)
    assert opts["MODEL.DSLA.CENTER_SAMPLING_RADIUS"] == 0.0
    assert opts["MODEL.DSLA.REGRESS_RANGES"][-1] == [256, math.inf]
    assert opts["INPUT.MIN_SIZE_TRAIN"] == (128,)
    assert opts["MODEL.DSLA.IOU_COUPLING"] is False
    assert opts["DATASETS.TRAIN"] == ("a", "b")


@pytest.mark.parametrize(
    "value",
    [
        [[0.0, 64.0], [512.0, math.inf]],
        (160,),
        (128, 160),
        True,
        0.5,
        3,
        "RGB",
        "build_dsla_tiny_fpn_backbone",
    ],
)
def test_override_values_are_written_as_text_that_reads_back(value):
    assert parse_override_value(format_override_value(value)) == value


def test_variant_from_a_config_file_and_malformed_variants_are_errors(tmp_path):
    assert parse_variant("f=configs/FCOS-Baseline/fcos_quickstart_shapes.yaml", BUILTINS).opts == ()
    with pytest.raises(ValueError, match="neither a known variant"):
        parse_variant("x=no-such-variant", BUILTINS)
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        parse_variant("x=dsla MODEL.DSLA.IOU_ONLY", BUILTINS)
    with pytest.raises(ValueError, match="NAME=BASE"):
        parse_variant("dsla MODEL.DSLA.IOU_ONLY True", BUILTINS)
    with pytest.raises(ValueError, match="directory"):
        parse_variant("a/b=dsla", BUILTINS)


def test_spec_file_variants_build_on_earlier_ones(tmp_path):
    spec = tmp_path / "study.yaml"
    spec.write_text(
        "variants:\n"
        "  - name: r32\n"
        "    base: dsla\n"
        "    opts: {MODEL.DSLA.REGRESS_RANGES: [[0, 32], [32, 64], [64, 128], [128, 256], [256, "
        ".inf]]}\n"
        "  - name: r32-cs\n"
        "    base: r32\n"
        "    opts: [MODEL.DSLA.CENTER_SAMPLING_RADIUS, 1.5]\n"
    )
    r32, r32_cs = load_variant_spec(str(spec), BUILTINS)
    assert dict(r32.opts)["MODEL.DSLA.REGRESS_RANGES"][-1] == [256, math.inf]
    assert dict(r32_cs.opts) == {**dict(r32.opts), "MODEL.DSLA.CENTER_SAMPLING_RADIUS": 1.5}


def test_command_line_selects_and_adds_variants_and_datasets():
    args = argument_parser().parse_args(
        [
            "--variants",
            "fcos,mine",
            "--variant",
            "mine=dsla MODEL.DSLA.IOU_ONLY True",
            "--datasets",
            "shapes,other",
            "--dataset-pair",
            "own",
            "own_tr",
            "own_va",
            "--input-size",
            "other",
            "320",
            "400",
            "--seeds",
            "1,2",
            "SOLVER.BASE_LR",
            "0.001",
        ]
    )
    assert [v.name for v in variants_from_args(args)] == ["fcos", "mine"]
    assert datasets_from_args(args) == [
        StudyDataset("shapes", "shapes_train", "shapes_val"),
        StudyDataset("other", "other_train", "other_val", (320, 400)),
        StudyDataset("own", "own_tr", "own_va"),
    ]
    assert args.seeds == [1, 2] and args.iters == 1500 and args.opts == ["SOLVER.BASE_LR", "0.001"]
    default = argument_parser().parse_args([])
    assert [v.name for v in variants_from_args(default)] == list(BUILTINS)
    assert datasets_from_args(default) == [StudyDataset.family("shapes")] and default.seeds == [
        1,
        2,
        3,
    ]


def test_runs_point_each_model_at_the_dataset_with_its_own_class_count_key(coco_pair, tmp_path):
    dataset = StudyDataset.family("study_coco", input_size=(96, 128))
    runs = plan_runs(
        [dataset],
        [BUILTINS["fcos"], BUILTINS["dsla-no-coupling"]],
        [1, 2],
        7,
        str(tmp_path / "out"),
        opts=[("SOLVER.BASE_LR", 0.001)],
        register_coco=coco_pair,
    )
    assert [r.label for r in runs] == [
        "study_coco/fcos/seed1",
        "study_coco/dsla-no-coupling/seed1",
        "study_coco/fcos/seed2",
        "study_coco/dsla-no-coupling/seed2",
    ]
    fcos, dsla = runs[2].build_cfg(), runs[3].build_cfg()
    assert runs[2].output_dir == str(tmp_path / "out" / "study_coco" / "fcos" / "seed2")
    assert fcos.MODEL.META_ARCHITECTURE == "FCOSBaseline" and fcos.MODEL.FCOS.NUM_CLASSES == 2
    assert "MODEL.DSLA.NUM_CLASSES" not in dict(runs[2].opts)
    assert dsla.MODEL.DSLA.NUM_CLASSES == 2 and dsla.MODEL.DSLA.IOU_COUPLING is False
    assert "MODEL.FCOS.NUM_CLASSES" not in dict(runs[3].opts)
    for cfg in (fcos, dsla):
        assert cfg.DATASETS.TRAIN == ("study_coco_train",) and cfg.DATASETS.TEST == (
            "study_coco_val",
        )
        assert cfg.SOLVER.MAX_ITER == 7 and cfg.SEED == 2 and cfg.SOLVER.BASE_LR == 0.001
        assert cfg.TEST.SCORE_IOU_EVAL and cfg.TEST.EVAL_PERIOD == 0
        assert cfg.INPUT.MIN_SIZE_TRAIN == (96,) and cfg.INPUT.MAX_SIZE_TEST == 128
        assert cfg.OUTPUT_DIR.endswith("seed2") and cfg.MODEL.DEVICE == "cpu"


def test_a_mistyped_override_fails_when_planned_not_after_hours_of_training(shapes_root, tmp_path):
    # detectron2 keeps a float key float: 0 (an int) is refused, 0.0 is what the built-in variant
    # uses.
    bad = parse_variant("bad=dsla MODEL.DSLA.INTERVAL_RELAXATION 0", BUILTINS)
    with pytest.raises(ValueError, match="Type mismatch"):
        plan_runs([StudyDataset.family("shapes")], [BUILTINS["dsla"], bad], [1], 5, str(tmp_path))
    with pytest.raises(
        AssertionError, match="Non-existent key: MODEL.DSLA.NO_SUCH_KEY"
    ):  # yacs' check
        plan_runs(
            [StudyDataset.family("shapes")],
            [Variant("typo", "DSLA/dsla_quickstart_shapes.yaml", (("MODEL.DSLA.NO_SUCH_KEY", 1),))],
            [1],
            5,
            str(tmp_path),
        )


def _write_result(
    out, dataset, variant, seed, ap, pearson, iters=100, minutes=2.0, before_nms=None, ap75=None
):
    run_dir = out / dataset / variant / f"seed{seed}"
    run_dir.mkdir(parents=True)
    metrics = {
        "bbox/AP": ap,
        "bbox/AP50": ap + 20,
        "bbox/APs": ap - 10,
        "bbox/APm": ap,
        "bbox/APl": ap + 5,
        "score_iou/pearson": pearson,
        "score_iou/spearman": 0.5,
        "score_iou/gt_top_score_not_best_iou": 0.25,
    }
    if ap75 is not None:
        metrics["bbox/AP75"] = ap75
    if (
        before_nms is not None
    ):  # (spearman, top-score-not-best fraction, pair concordance) with NMS disabled
        for key, value in zip(
            ("spearman", "gt_top_score_not_best_iou", "gt_pair_concordance"), before_nms
        ):
            metrics["score_iou_before_nms/" + key] = value
    result = {
        "dataset": dataset,
        "variant": variant,
        "seed": seed,
        "iterations": iters,
        "minutes": minutes,
        "config_file": "DSLA/dsla_quickstart_shapes.yaml",
        "variant_overrides": [["MODEL.DSLA.IOU_ONLY", True]],
        "metrics": metrics,
        "machine": {"platform": "Linux-test", "cpu_count": 2, "torch": "2.x", "device": "cpu"},
    }
    (run_dir / "result.json").write_text(json.dumps(result))


def test_results_aggregate_to_mean_and_sample_std_over_seeds(tmp_path):
    for seed, ap in zip((1, 2, 3), (40.0, 42.0, 44.0)):
        _write_result(tmp_path, "shapes", "dsla", seed, ap, pearson=0.7 if seed < 3 else math.nan)
    _write_result(tmp_path, "shapes", "fcos", 1, 50.0, 0.9)
    _write_result(
        tmp_path, "shapes", "fcos", 2, 10.0, 0.9, iters=500
    )  # another budget: not in this study
    _write_result(tmp_path, "other", "dsla", 1, 30.0, 0.8)

    results = collect_results(str(tmp_path), iters=100)
    assert len(results) == 5
    summary = aggregate(results, variant_order=["fcos", "dsla"])
    assert list(summary) == ["other", "shapes"] and list(summary["shapes"]) == ["fcos", "dsla"]
    dsla = summary["shapes"]["dsla"]
    assert dsla["seeds"] == [1, 2, 3]
    assert dsla["bbox/AP"] == {"mean": 42.0, "std": 2.0, "n": 3}
    assert dsla["bbox/AP50"]["mean"] == 62.0 and dsla["minutes"]["mean"] == 2.0
    # A seed whose figure is undefined (nan) does not make the mean nan; n says how many counted.
    assert (
        dsla["score_iou/pearson"]["mean"] == pytest.approx(0.7)
        and dsla["score_iou/pearson"]["n"] == 2
    )
    fcos = summary["shapes"]["fcos"]
    assert fcos["bbox/AP"]["mean"] == 50.0 and math.isnan(fcos["bbox/AP"]["std"])
    assert math.isnan(fcos["bbox/AP75"]["mean"])


def test_markdown_has_a_table_per_dataset_with_mean_std_and_the_machine(tmp_path):
    for seed, ap, before_nms in zip((1, 2), (40.0, 44.0), ((0.6, 0.3, 0.6), (0.4, 0.5, 0.7))):
        _write_result(
            tmp_path, "shapes", "dsla", seed, ap, 0.75, before_nms=before_nms, ap75=ap - 5
        )
    _write_result(tmp_path, "shapes", "fcos", 1, 50.0, math.nan)
    results = collect_results(str(tmp_path))
    markdown = render_markdown(
        aggregate(results, ["fcos", "dsla"]),
        iters=100,
        machines=[results[0]["machine"]],
        run_minutes=6.0,
        wall_minutes=7.5,
        command="python tools/study.py --iters 100",
    )
    lines = markdown.splitlines()
    header = lines.index("## shapes") + 2
    assert lines[header] == (
        "| variant | seeds | AP | AP50 | AP75 | APs | APm | APl | spearman | top-score not "
        "best-localized "
        "| "
        "spearman before NMS | top-score not best-localized before NMS | pair concordance before "
        "NMS | train min |"
    )
    assert lines[header + 1] == "|" + "---|" * 14
    # A run of an earlier version of the study, without the figures before NMS: n/a, not 0.
    assert lines[header + 2] == (
        "| `fcos` | 1 | 50.0 | 70.0 | n/a | 40.0 | 50.0 | 55.0 | 0.500 | 0.250 | n/a | n/a | n/a | "
        "2.0 |"
    )
    assert (
        "| 0.500 ± 0.000 | 0.250 ± 0.000 | 0.500 ± 0.141 | 0.400 ± 0.141 | 0.650 ± 0.071 | 2.0 ± "
        "0.0 |" in (lines[header + 3])
    )
    assert lines[header + 3].startswith(
        "| `dsla` | 2 | 42.0 ± 2.8 | 62.0 ± 2.8 | 37.0 ± 2.8 | 32.0 ± 2.8 |"
    )
    assert "- `dsla`: `DSLA/dsla_quickstart_shapes.yaml` with `MODEL.DSLA.IOU_ONLY True`" in lines
    assert "- Linux-test, 2 CPUs, torch 2.x, device cpu" in lines
    assert "- training and evaluation, all runs above: 6.0 minutes" in lines
    assert "- command: `python tools/study.py --iters 100`" in lines


def _fake_launcher(calls, fail=()):
    def launch(run):
        calls.append(run.label)
        if run.variant.name in fail:
            raise RunFailed(f"{run.label} crashed")
        os.makedirs(run.output_dir, exist_ok=True)
        with open(run.result_file, "w") as f:
            json.dump({**run.record(), "metrics": {"bbox/AP": 1.0}, "minutes": 0.1}, f)

    return launch


def test_finished_runs_are_skipped_and_runs_of_another_budget_or_definition_retrained(
    shapes_root, tmp_path
):
    variants = [BUILTINS["fcos"], BUILTINS["dsla"]]
    datasets = [StudyDataset.family("shapes")]
    calls = []
    execute_runs(
        plan_runs(datasets, variants, [1, 2], 5, str(tmp_path)), launch=_fake_launcher(calls)
    )
    assert len(calls) == 4

    calls.clear()
    outcome = execute_runs(
        plan_runs(datasets, variants, [1, 2, 3], 5, str(tmp_path)), launch=_fake_launcher(calls)
    )
    assert calls == ["shapes/fcos/seed3", "shapes/dsla/seed3"] and len(outcome["skipped"]) == 4

    calls.clear()
    execute_runs(plan_runs(datasets, variants, [1], 9, str(tmp_path)), launch=_fake_launcher(calls))
    assert calls == ["shapes/fcos/seed1", "shapes/dsla/seed1"]

    calls.clear()
    redefined = parse_variant("dsla=dsla MODEL.DSLA.IOU_ONLY True", BUILTINS)
    execute_runs(
        plan_runs(datasets, [redefined], [1], 9, str(tmp_path)), launch=_fake_launcher(calls)
    )
    assert calls == ["shapes/dsla/seed1"]


def test_finished_runs_without_figures_before_nms_get_them_if_their_weights_are_kept(
    shapes_root, tmp_path
):
    runs = plan_runs(
        [StudyDataset.family("shapes")], [BUILTINS["fcos"], BUILTINS["dsla"]], [1], 5, str(tmp_path)
    )
    execute_runs(
        runs, launch=_fake_launcher([])
    )  # results of an earlier version: no figures before NMS
    (tmp_path / "shapes" / "dsla" / "seed1" / "model_final.pth").write_bytes(b"weights")
    completed = []

    def complete(run):
        completed.append(run.label)
        result = json.loads(open(run.result_file).read())
        result["metrics"]["score_iou_before_nms/gt_pair_concordance"] = 0.5
        with open(run.result_file, "w") as f:
            json.dump(result, f)

    calls = []
    outcome = execute_runs(runs, launch=_fake_launcher(calls), complete=complete)
    # Only the run with weights can be evaluated again; nothing is retrained.
    assert calls == [] and completed == ["shapes/dsla/seed1"] and len(outcome["skipped"]) == 2
    completed.clear()
    execute_runs(runs, launch=_fake_launcher(calls), complete=complete)
    assert calls == [] and completed == []

    def broken(run):
        raise RunFailed(f"{run.label}: evaluation crashed")

    (tmp_path / "shapes" / "fcos" / "seed1" / "model_final.pth").write_bytes(b"weights")
    outcome = execute_runs(runs, launch=_fake_launcher(calls), complete=broken)
    assert [r.label for r in outcome["failed"]] == ["shapes/fcos/seed1"] and calls == []
    assert json.loads(open(runs[0].result_file).read())["metrics"] == {
        "bbox/AP": 1.0
    }  # the result is kept


def test_a_failed_run_is_reported_and_the_study_goes_on_unless_fail_fast(shapes_root, tmp_path):
    runs = plan_runs(
        [StudyDataset.family("shapes")],
        [BUILTINS["fcos"], BUILTINS["dsla"]],
        [1, 2],
        5,
        str(tmp_path),
    )
    calls = []
    outcome = execute_runs(runs, launch=_fake_launcher(calls, fail={"fcos"}))
    assert len(calls) == 4
    assert [r.label for r in outcome["failed"]] == ["shapes/fcos/seed1", "shapes/fcos/seed2"]
    assert [r.label for r in outcome["finished"]] == ["shapes/dsla/seed1", "shapes/dsla/seed2"]

    calls.clear()
    with pytest.raises(RunFailed):
        execute_runs(runs, fail_fast=True, launch=_fake_launcher(calls, fail={"fcos"}))
    assert calls == ["shapes/fcos/seed1"]


def test_study_trains_each_run_in_a_child_process_and_writes_table_json_and_plots(
    shapes_root, tmp_path, monkeypatch
):
    # The spawned children inherit the environment: the small shapes copy, one thread each.
    for key, value in shapes_env(shapes_root).items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "study"
    study = [
        "--output",
        str(out),
        "--datasets",
        "shapes",
        "--input-size",
        "shapes",
        "64",
        "64",
        "--iters",
        "3",
        "--seeds",
        "1",
        "--device",
        "cpu",
    ]
    tiny = [str(item) for pair in TINY for item in pair]
    stale = out / "shapes" / "fcos" / "seed1"  # what a crashed earlier attempt left
    stale.mkdir(parents=True)
    (stale / "metrics.json").write_text('{"iteration": 99, "bbox/AP": 99.0, "stale": 1}\n')
    status = main(
        argument_parser().parse_args(
            [
                *study,
                "--variants",
                "fcos,dsla,broken",
                "--variant",
                "broken=dsla MODEL.BACKBONE.NAME no_such_backbone",
                *tiny,
            ]
        )
    )
    assert status == 1  # a run failed, the others finished and are reported
    assert "no_such_backbone" in (out / "shapes" / "broken" / "seed1" / "error.txt").read_text()
    assert not (out / "shapes" / "broken" / "seed1" / "result.json").exists()

    for variant in ("fcos", "dsla"):
        result = json.loads((out / "shapes" / variant / "seed1" / "result.json").read_text())
        assert result["iterations"] == 3 and result["minutes"] > 0
        expected = {
            "bbox/AP",
            "bbox/APs",
            "score_iou/pearson",
            "score_iou/gt_top_score_not_best_iou",
            "score_iou_before_nms/gt_pair_concordance",
        }
        assert expected <= set(result["metrics"])
        assert result["metrics"]["score_iou/num_detections"] > 0
        # The same weights with NMS disabled: every candidate the detections were chosen from, and
        # more.
        before = result["metrics"]["score_iou_before_nms/num_detections"]
        assert before > result["metrics"]["score_iou/num_detections"]
        assert (
            out / "shapes" / variant / "seed1" / "inference_before_nms" / "score_iou_pairs.npz"
        ).exists()
        assert ["INPUT.MIN_SIZE_TEST", 64] in result["overrides"]
        assert "stale" not in (out / "shapes" / variant / "seed1" / "metrics.json").read_text()
        cfg = (out / "shapes" / variant / "seed1" / "config.yaml").read_text()
        assert "MAX_ITER: 3" in cfg and "SEED: 1" in cfg and "IMS_PER_BATCH: 2" in cfg
    report = json.loads((out / "study.json").read_text())
    assert [(r["variant"], r["seed"]) for r in report["runs"]] == [("dsla", 1), ("fcos", 1)]
    assert list(report["summary"]["shapes"]) == ["fcos", "dsla"]
    markdown = (out / "study.md").read_text()
    assert (
        "| `fcos` | 1 |" in markdown and "| `dsla` | 1 |" in markdown and "`broken`" not in markdown
    )
    for plot in ("study_ap.png", "study_consistency.png"):
        with Image.open(out / plot) as im:
            assert im.size[0] > 100 and len(set(im.convert("L").getdata())) > 2

    # Resumed: nothing finished is trained again.
    calls = []
    again = run_study(
        [BUILTINS["fcos"], BUILTINS["dsla"]],
        [StudyDataset.family("shapes", input_size=(64, 64))],
        [1],
        3,
        str(out),
        opts=TINY,
        launch=_fake_launcher(calls),
    )
    assert calls == [] and len(again["outcome"]["skipped"]) == 2
    # --report-only rebuilds the report from the results alone.
    (out / "study.md").unlink()
    assert main(argument_parser().parse_args([*study, "--report-only"])) == 0
    assert "| `fcos` | 1 |" in (out / "study.md").read_text()


def _alive(pid):
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped by its new parent, does
    not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc (Linux)")
def test_a_run_does_not_outlive_a_killed_study(tmp_path):
    (tmp_path / "sleeper.py").write_text(
        textwrap.dedent("""
        import os, time
        def target(run):
            with open(os.path.join(run.output_dir, "pid.tmp"), "w") as f:
                f.write(str(os.getpid()))
            os.replace(os.path.join(run.output_dir, "pid.tmp"), os.path.join(run.output_dir, "pid"))
            time.sleep(300)
    """)
    )
    (tmp_path / "study.py").write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import sleeper
        from dsla.study import BUILTIN_VARIANTS, StudyDataset, StudyRun, run_in_subprocess
        if __name__ == "__main__":
            dataset = StudyDataset("d", "d_train", "d_val")
            run = StudyRun(dataset, BUILTIN_VARIANTS[0], 1, 1, {str(tmp_path)!r}, ())
            run_in_subprocess(run, sleeper.target, orphan_check_period=0.2)
    """)
    )
    study = subprocess.Popen([sys.executable, str(tmp_path / "study.py")])
    pid_file = tmp_path / "pid"
    deadline = time.time() + 120
    while not pid_file.exists() and study.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert pid_file.exists(), "the run never started"
    run_pid = int(pid_file.read_text())
    assert _alive(run_pid)
    study.send_signal(signal.SIGKILL)  # no chance to clean up
    study.wait()
    deadline = time.time() + 20
    while _alive(run_pid) and time.time() < deadline:
        time.sleep(0.2)
    if _alive(run_pid):
        os.kill(run_pid, signal.SIGKILL)
        pytest.fail("the run kept going after its study was killed")
