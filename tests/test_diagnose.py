"""dsla.analysis and tools/diagnose.py: per-GT positives and label mass, candidate selection,
recall, the CLI."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from dsla import smooth_label_targets
from dsla.analysis import gt_recall, measure_image, probe_model, summarize
from dsla.modeling import DSLAProposalGenerator

from conftest import REPO_ROOT, load_config

DSLA_CONFIG = "configs/DSLA/dsla_quickstart_shapes.yaml"
FCOS_CONFIG = "configs/FCOS-Baseline/fcos_quickstart_shapes.yaml"

# Three disjoint boxes on a 64x64 input: A and B cover points of several levels; C lies strictly
# between the points of every level (multiples of 8 with offset 0), so it can have no positive.
GT_BOXES = [[4.0, 4.0, 30.0, 28.0], [34.0, 2.0, 62.0, 46.0], [1.0, 50.0, 4.0, 53.0]]
GT_CLASSES = [0, 1, 2]
SCORE_LOGIT = 0.4


@pytest.fixture(scope="module")
def dsla_model():
    torch.manual_seed(0)
    # The assignment these cases were worked out for, whatever the quick start ships: COCO's ranges
    # divided by 4, points at offset 0, no center sampling.
    opts = [
        "MODEL.DSLA.REGRESS_RANGES",
        "[[0, 16], [16, 32], [32, 64], [64, 128], [128, 100000]]",
        "MODEL.DSLA.POINT_OFFSET",
        "0.0",
        "MODEL.DSLA.CENTER_SAMPLING_RADIUS",
        "0.0",
    ]
    model = build_model(load_config(DSLA_CONFIG, opts))
    return model.eval()


def _input(boxes, classes, size=64):
    inst = Instances((size, size))
    inst.gt_boxes = Boxes(torch.tensor(boxes))
    inst.gt_classes = torch.tensor(classes)
    image = torch.zeros(3, size, size, dtype=torch.uint8)
    return {"image": image, "height": size, "width": size, "instances": inst}


def _static_labels(pg, points, boxes, classes):
    """smooth_label_targets of all levels' points, with the generator's ranges and options."""
    strides = torch.cat([torch.full((len(p),), float(s)) for p, s in zip(points, pg.strides)])
    ranges = torch.cat([pg.regress_ranges[i].expand(len(p), 2) for i, p in enumerate(points)])
    return smooth_label_targets(
        torch.cat(points),
        strides,
        ranges,
        torch.tensor(boxes),
        torch.tensor(classes),
        pg.num_classes,
        relaxation=pg.interval_relaxation,
        core_zone=pg.core_zone,
    )


def test_positives_and_label_mass_per_gt_equal_smooth_label_targets(dsla_model, monkeypatch):
    pg = dsla_model.proposal_generator
    predict = pg.predict
    seen = {}

    def predict_known_boxes(features):
        # Distances: the exact targets for the points of box A (IoU 1), half of them for box B (a
        # box around the same point with every side halved lies inside the target: IoU 1/4); a
        # constant logit for every class.
        points, logits, _ = predict(features)
        _, classes, targets = _static_labels(pg, points, GT_BOXES, GT_CLASSES)
        targets = torch.where((classes == 1)[:, None], targets / 2, targets)
        seen["points"] = points
        distances = [d[None] for d in targets.split([len(p) for p in points])]
        return points, [torch.full_like(x, SCORE_LOGIT) for x in logits], distances

    monkeypatch.setattr(pg, "predict", predict_known_boxes)
    (probe,), levels = probe_model(dsla_model, [_input(GT_BOXES, GT_CLASSES)])
    per_gt, per_point = measure_image(probe, len(levels), (64, 64), (128, 128))

    points = seen["points"]
    level_of_point = torch.cat([torch.full((len(p),), i) for i, p in enumerate(points)])
    for g, (box, cls) in enumerate(zip(GT_BOXES, GT_CLASSES)):
        # The boxes are disjoint, so each one alone gets the same points as in the joint assignment.
        y_s, _, _ = _static_labels(pg, points, [box], [cls])
        expected_counts = torch.bincount(level_of_point[y_s > 0], minlength=len(levels)).numpy()
        np.testing.assert_array_equal(per_gt["num_pos"][g], expected_counts)
        if g == 2:
            assert expected_counts.sum() == 0
            assert per_gt["sum_y_s"][g] == 0 and per_gt["sum_y_d"][g] == 0
            assert math.isnan(per_gt["iou_mean"][g]) and math.isnan(per_gt["score_max"][g])
            continue
        assert expected_counts.sum() >= 2 and (g == 1 or (expected_counts > 0).sum() == 2), (
            "A spans two levels"
        )
        iou = 1.0 if g == 0 else 0.25
        assert per_gt["sum_y_s"][g] == pytest.approx(float(y_s.sum()), rel=1e-5)
        assert per_gt["max_y_s"][g] == pytest.approx(float(y_s.max()), rel=1e-5)
        assert per_gt["sum_y_d"][g] == pytest.approx(iou * float(y_s.sum()), rel=1e-4)
        assert per_gt["max_y_d"][g] == pytest.approx(iou * float(y_s.max()), rel=1e-4)
        assert per_gt["iou_mean"][g] == pytest.approx(iou, rel=1e-4)
        assert per_gt["score_mean"][g] == pytest.approx(1 / (1 + math.exp(-SCORE_LOGIT)), rel=1e-5)
    # Original area = input area x (128 / 64)^2: box A is 26 x 24 at the input.
    assert per_gt["area"][0] == pytest.approx(26 * 24 * 4)
    assert len(per_point["gt"]) == per_gt["num_pos"].sum()

    summary = summarize([per_gt], [per_point], levels, side_edges=[8, 32])
    assert summary["buckets"]["all"]["zero_pos_share"] == pytest.approx(1 / 3)
    # C (3 x 3 at the input) is alone in the smallest max-side bucket and has no positive on any
    # level.
    assert summary["buckets"]["side 0-8"]["num_gts"] == 1
    assert summary["buckets"]["side 0-8"]["zero_pos_share"] == 1.0
    assert summary["buckets"]["side 0-8"]["zero_pos_share_per_level"] == [1.0] * len(levels)


def test_fcos_positives_are_detectron2_label_anchors_positives():
    torch.manual_seed(0)
    model = build_model(load_config(FCOS_CONFIG)).eval()
    boxes, classes = [[4.0, 4.0, 30.0, 28.0], [30.0, 20.0, 62.0, 60.0]], [0, 1]
    batch = [_input(boxes, classes)]
    (probe,), levels = probe_model(model, batch)

    features = model.backbone(model.preprocess_image(batch).tensor)
    anchors = model.anchor_generator([features[f] for f in model.head_in_features])
    (labels,), (matched,) = model.label_anchors(anchors, [batch[0]["instances"]])
    pos = labels != model.num_classes
    level_of_anchor = torch.cat([torch.full((len(a),), i) for i, a in enumerate(anchors)])
    for g, box in enumerate(boxes):
        mine = probe.pos_level[probe.pos_gt == g]
        theirs = level_of_anchor[pos & (matched == torch.tensor(box)).all(dim=1)]
        assert len(theirs) > 0
        assert torch.equal(mine.sort().values, theirs.sort().values)
    # FCOS's classification target is 1: the label mass of a GT is its number of positives.
    assert torch.equal(probe.y_s, torch.ones(int(pos.sum())))


def test_recall_needs_the_class_and_iou_at_least_the_threshold():
    gt_boxes = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [40.0, 40.0, 50.0, 50.0]]
    )
    gt_classes = torch.tensor([0, 0, 1])
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 5.0],  # GT 0, class 0, IoU 0.5: recalled
            [20.0, 20.0, 30.0, 30.0],  # GT 1 exactly, but class 1: not recalled
            [20.0, 20.0, 30.0, 24.0],  # GT 1, class 0, IoU 0.4: not recalled
            [40.0, 40.0, 50.0, 50.0],  # GT 2, class 1, IoU 1: recalled
        ]
    )
    classes = torch.tensor([0, 1, 0, 1])
    assert gt_recall(gt_boxes, gt_classes, boxes, classes).tolist() == [True, False, True]
    assert gt_recall(gt_boxes, gt_classes, boxes[:0], classes[:0]).tolist() == [False, False, False]


def _candidates(points, scores, distances, topk):
    """The pre-NMS candidates the diagnosis reports: those of the model's own selection."""
    generator = DSLAProposalGenerator(
        two_stage=False,
        head=torch.nn.Identity(),
        in_features=["p3"],
        strides=[8],
        regress_ranges=[(0.0, float("inf"))],
        num_classes=2,
        score_thresh_test=0.05,
        topk_candidates_test=topk,
    )
    boxes, cand_scores, classes = generator.image_candidates(
        points, [scores.logit()], distances, (32, 40)
    )
    return boxes.tensor, cand_scores, classes


def test_candidates_are_top_points_by_max_class_score_then_score_threshold():
    # Scores (sigmoid) per point and class; with k = 2 the points with the best max score are p0
    # (0.9) and p2 (0.8). Their pairs above 0.05 are all four; p1's 0.5 is left out although it
    # beats p0's 0.06.
    scores = torch.tensor([[0.9, 0.06], [0.04, 0.5], [0.8, 0.7], [0.3, 0.01]])
    points = [torch.tensor([[8.0, 8.0], [16.0, 8.0], [24.0, 8.0], [32.0, 8.0]])]
    distances = [torch.tensor([[4.0, 4.0, 4.0, 4.0]] * 3 + [[4.0, 4.0, 40.0, 4.0]])]
    boxes, cand_scores, classes = _candidates(points, scores, distances, topk=2)
    pairs = sorted(zip(cand_scores.tolist(), classes.tolist()), reverse=True)
    assert [c for _, c in pairs] == [0, 0, 1, 1]
    assert [round(s, 4) for s, _ in pairs] == [0.9, 0.8, 0.7, 0.06]
    assert {tuple(b) for b in boxes.tolist()} == {(4.0, 4.0, 12.0, 12.0), (20.0, 4.0, 28.0, 12.0)}
    # k larger than the level (a small input): all points, boxes clipped to the image.
    boxes, cand_scores, _ = _candidates(points, scores, distances, topk=1000)
    assert len(cand_scores) == 6 and boxes[:, 2].max() == 40


def _tool():
    spec = importlib.util.spec_from_file_location(
        "diagnose_tool", os.path.join(REPO_ROOT, "tools", "diagnose.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("config_file", [DSLA_CONFIG, FCOS_CONFIG])
def test_cli_writes_json_and_tables_per_checkpoint(shapes_root, tmp_path, config_file):
    cfg = load_config(config_file)
    model = build_model(cfg)
    checkpointer = DetectionCheckpointer(model, save_dir=str(tmp_path))
    checkpointer.save("model_0000004", iteration=4)
    checkpointer.save("model_final", iteration=9)
    tool = _tool()
    output = tmp_path / "diagnosis"
    args = tool.argument_parser().parse_args(
        [
            "--config-file",
            os.path.join(REPO_ROOT, config_file),
            "--weights",
            str(tmp_path / "model_0000004.pth"),
            str(tmp_path / "model_final.pth"),
            "--dataset",
            "shapes_val",
            "--num-images",
            "2",
            "--output",
            str(output),
            "MODEL.DEVICE",
            "cpu",
        ]
    )
    tool.main(args)

    report = json.loads((output / "diagnosis.json").read_text())
    num_gts = sum(len(d["annotations"]) for d in DatasetCatalog.get("shapes_val")[:2])
    assert report["num_images"] == 2
    assert [row["iteration"] for row in report["checkpoints"]] == [4, 9]
    for row in report["checkpoints"]:
        buckets = row["buckets"]
        assert buckets["all"]["num_gts"] == num_gts
        assert sum(buckets[b]["num_gts"] for b in ("small", "medium", "large")) == num_gts
        assert len(buckets["all"]["pos_per_gt_per_level"]) == len(row["levels"]) == 5
        assert 0 <= buckets["all"]["zero_pos_share"] <= 1
    table = (output / "diagnosis.md").read_text()
    assert "## all" in table and "## level p3" in table
    assert "| 4 | " in table and "| 9 | " in table
    assert (output / "over_training.png").stat().st_size > 0
