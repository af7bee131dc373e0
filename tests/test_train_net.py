"""train_net.py end to end on a tiny COCO-format dataset written by the test."""

import collections
import json
import os

import pytest
import torch

from dsla.engine import default_argument_parser, main

from conftest import REPO_ROOT, short_training_opts, write_coco_dataset

CONFIGS = ["configs/DSLA/dsla_R_50_FPN_1x.yaml", "configs/DSLA/dsla_quickstart_shapes.yaml"]


def _args(tmp_path, name, config, extra_opts=(), extra_args=()):
    json_path, image_root = write_coco_dataset(str(tmp_path / "data"), num_images=4)
    argv = [
        "--config-file",
        os.path.join(REPO_ROOT, config),
        "--register-coco",
        name,
        json_path,
        image_root,
        *extra_args,
        "MODEL.DEVICE",
        "cpu",
        "MODEL.WEIGHTS",
        "",
        "MODEL.DSLA.NUM_CLASSES",
        "2",
        "MODEL.DSLA.SCORE_THRESH_TEST",
        "0.0",
        "DATASETS.TRAIN",
        f"('{name}',)",
        "DATASETS.TEST",
        f"('{name}',)",
        "INPUT.MIN_SIZE_TRAIN",
        "(96,)",
        "INPUT.MAX_SIZE_TRAIN",
        "128",
        "INPUT.MIN_SIZE_TEST",
        "96",
        "INPUT.MAX_SIZE_TEST",
        "128",
        "SOLVER.STEPS",
        "(2,)",
        *short_training_opts(tmp_path / "out", 3, evaluate=True),
        *extra_opts,
    ]
    return default_argument_parser().parse_args(argv)


@pytest.mark.parametrize("config", CONFIGS)
def test_train_then_evaluate_a_registered_coco_dataset(tmp_path, config):
    """A COCO-format dataset the project has never seen, given with --register-coco."""
    name = f"tiny_{os.path.basename(config)}"
    main(_args(tmp_path, name, config))
    out = tmp_path / "out"
    assert (out / "model_final.pth").is_file()
    with open(out / "metrics.json") as f:
        metrics = [json.loads(line) for line in f]
    evaluated = [m for m in metrics if "bbox/AP" in m]
    assert len(evaluated) == 1 and {"bbox/AP50", "bbox/AP75"} <= set(evaluated[0])
    trained = [m for m in metrics if "loss_dsla_cls" in m]
    assert trained and all(torch.isfinite(torch.tensor(m["loss_dsla_box"])) for m in trained)
    assert "dsla/num_pos_per_image" in trained[-1]
    assert (out / "inference" / name / "coco_instances_results.json").is_file()

    # --eval-only loads the trained weights and evaluates again with the same result: at an AP
    # near 0 the same AP would prove nothing, the same detections, box for box, do.
    results = os.path.join("inference", name, "coco_instances_results.json")
    with open(out / results) as f:
        expected = json.load(f)
    eval_opts = [
        "MODEL.WEIGHTS",
        str(out / "model_final.pth"),
        "OUTPUT_DIR",
        str(tmp_path / "eval"),
    ]
    again = main(_args(tmp_path, name, config, eval_opts, ["--eval-only"]))
    assert again["bbox"]["AP"] == pytest.approx(evaluated[0]["bbox/AP"], nan_ok=True)
    with open(tmp_path / "eval" / results) as f:
        actual = json.load(f)
    # Up to 100 per image; a barely trained head that predicts distances through a relu (the quick
    # start) gives a few zero-size boxes, which detector_postprocess drops, so a few may be missing.
    per_image = collections.Counter(d["image_id"] for d in expected)
    assert len(per_image) == 4 and all(50 <= n <= 100 for n in per_image.values()), per_image
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual):
        assert (got["image_id"], got["category_id"]) == (want["image_id"], want["category_id"])
        assert got["bbox"] == pytest.approx(want["bbox"], abs=1e-3)
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
