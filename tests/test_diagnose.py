"""dsla.analysis and tools/diagnose.py: per-GT positives and label mass, candidate selection,
recall, top-scored and best IoU, aspect buckets, box loss per positive, the CLI and the
comparison."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest
import torch
from fvcore.nn import giou_loss

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from dsla import smooth_label_targets
from dsla.analysis import (
    ImageProbe,
    compare_diagnoses,
    gt_recall,
    gt_top_and_best_iou,
    measure_image,
    probe_model,
    summarize,
    write_diagnosis,
)
from dsla.losses import box_regression_loss
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
        aspect = ("aspect 1-1.5", "aspect 1.5-3", "aspect 3-inf")
        assert sum(buckets[b]["num_gts"] for b in aspect) == num_gts
        assert 0 <= buckets["all"]["top_candidate_iou75_share"] <= 1
        assert buckets["all"]["box_loss_per_positive"] >= 0
        assert row["levels"]["p3"]["box_weight_share"] <= 1
    assert report["aspect_edges"] == [1.5, 3.0]
    table = (output / "diagnosis.md").read_text()
    assert "## all" in table and "## level p3" in table
    assert "| 4 | " in table and "| 9 | " in table
    assert "## aspect 3-inf" in table and "| top cand IoU |" in table
    assert (output / "over_training.png").stat().st_size > 0


def test_top_and_best_iou_of_a_gt_among_the_boxes_of_its_class_it_overlaps_most():
    gt_boxes = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0], [40.0, 0.0, 50.0, 10.0]]
    )
    gt_classes = torch.tensor([0, 0, 1])
    boxes, scores, classes = zip(
        ([0.0, 0.0, 10.0, 5.0], 0.9, 0),  # GT 0, IoU 0.5
        ([0.0, 0.0, 10.0, 10.0], 0.6, 0),  # GT 0, IoU 1: its best, not its top-scored
        ([0.0, 0.0, 10.0, 8.0], 0.95, 1),  # over GT 0 but of class 1: nobody's
        # Between GT 0 (IoU 60 / 240 = 0.25) and GT 1 (40 / 260): GT 0's, and its top-scored.
        ([4.0, 0.0, 24.0, 10.0], 0.99, 0),
        ([20.0, 0.0, 30.0, 10.0], 0.3, 0),  # GT 1, IoU 1
        ([22.0, 0.0, 30.0, 10.0], 0.7, 0),  # GT 1, IoU 0.8, top score ...
        ([21.0, 0.0, 30.0, 10.0], 0.7, 0),  # ... tied with IoU 0.9: the better one counts
        ([40.0, 0.0, 50.0, 10.0], 0.8, 0),  # exactly GT 2 but of class 0: GT 2 has no box
    )
    top, best = gt_top_and_best_iou(
        gt_boxes, gt_classes, torch.tensor(boxes), torch.tensor(scores), torch.tensor(classes)
    )
    assert top[:2].tolist() == pytest.approx([0.25, 0.9])
    assert best[:2].tolist() == pytest.approx([1.0, 1.0])
    assert math.isnan(top[2]) and math.isnan(best[2])

    top, best = gt_top_and_best_iou(
        gt_boxes, gt_classes, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long)
    )
    assert torch.isnan(top).all() and torch.isnan(best).all()


def _probe(gt_boxes, candidate_boxes, pos_gt, y_s, box_losses, num_levels=1):
    """An ImageProbe of one class; each candidate (and detection) scored by its index order."""
    gt_boxes, candidate_boxes = torch.tensor(gt_boxes), torch.tensor(candidate_boxes).view(-1, 4)
    classes = torch.zeros(len(candidate_boxes), dtype=torch.long)
    scores = torch.linspace(1.0, 0.5, len(candidate_boxes))
    y_s, box_losses = torch.tensor(y_s), torch.tensor(box_losses)
    return ImageProbe(
        gt_boxes=gt_boxes,
        gt_classes=torch.zeros(len(gt_boxes), dtype=torch.long),
        pos_gt=torch.tensor(pos_gt),
        pos_level=torch.zeros(len(pos_gt), dtype=torch.long),
        y_s=y_s,
        y_d=y_s,
        ious=torch.ones_like(y_s),
        scores=torch.ones_like(y_s),
        box_losses=box_losses,
        giou_losses=box_losses / 2,
        candidate_boxes=candidate_boxes,
        candidate_scores=scores,
        candidate_classes=classes,
        detection_boxes=candidate_boxes,
        detection_scores=scores,
        detection_classes=classes,
        box_weights=y_s,
    )


# Square A, B of aspect 2, upright C of aspect 4, D of aspect 5. Their candidates: A exactly, B with
# IoU 30 / 40 = 0.75, C with IoU 20 / 40 = 0.5; D none.
ASPECT_GTS = [[0.0, 0.0, 20.0, 20.0], [30.0, 0.0, 70.0, 20.0], [0, 30, 10, 70], [80, 0, 90, 50]]
ASPECT_CANDIDATES = [[0.0, 0.0, 20.0, 20.0], [30.0, 0.0, 60.0, 20.0], [0.0, 30.0, 10.0, 50.0]]
# Positives: two of A, one of B, one of C.
ASPECT_POSITIVES = {"pos_gt": [0, 0, 1, 2], "y_s": [1.0, 0.5, 0.5, 0.25]}
ASPECT_BOX_LOSSES = [0.2, 0.4, 0.6, 1.0]


def _aspect_summary(candidates=ASPECT_CANDIDATES, aspect_edges=(1.5, 3.0)):
    probe = _probe(ASPECT_GTS, candidates, box_losses=ASPECT_BOX_LOSSES, **ASPECT_POSITIVES)
    per_gt, per_point = measure_image(probe, 1, (100, 100), (100, 100))
    return per_gt, summarize([per_gt], [per_point], ["p3"], [32.0], aspect_edges)


def test_aspect_buckets_with_the_top_candidate_iou_shares_and_box_loss_per_positive():
    per_gt, summary = _aspect_summary()
    np.testing.assert_allclose(per_gt["aspect"], [1.0, 2.0, 4.0, 5.0])
    np.testing.assert_allclose(per_gt["top_candidate_iou"][:3], [1.0, 0.75, 0.5])
    assert math.isnan(per_gt["top_detection_iou"][3])
    buckets = summary["buckets"]
    assert [buckets[b]["num_gts"] for b in ("aspect 1-1.5", "aspect 1.5-3", "aspect 3-inf")] == [
        1,
        1,
        2,
    ]
    square, elongated, thin = (
        buckets["aspect 1-1.5"],
        buckets["aspect 1.5-3"],
        buckets["aspect 3-inf"],
    )
    assert square["top_candidate_iou75_share"] == elongated["top_candidate_iou75_share"] == 1.0
    # C's candidate counts for AP50 but not AP75; D, without one, for neither and not in the mean.
    assert thin["top_candidate_iou"] == pytest.approx(0.5)
    assert thin["top_candidate_iou50_share"] == pytest.approx(0.5)
    assert thin["top_candidate_iou75_share"] == 0.0
    assert thin["top_detection_iou50_share"] == pytest.approx(0.5)
    assert buckets["all"]["best_candidate_iou"] == pytest.approx(2.25 / 3)

    # A's two positives: losses 0.2 and 0.4 with y_s 1 and 0.5.
    assert square["box_loss_per_positive"] == pytest.approx(0.3)
    assert square["weighted_box_loss_per_positive"] == pytest.approx((0.2 + 0.2) / 2)
    assert square["giou_loss_per_positive"] == pytest.approx(0.15)
    assert square["box_weight_share"] == pytest.approx(1.5 / 2.25)
    assert buckets["all"]["box_weight_share"] == pytest.approx(1.0)
    assert summary["levels"]["p3"]["box_loss_per_positive"] == pytest.approx(0.55)
    assert thin["box_loss_per_positive"] == pytest.approx(1.0)

    _, summary = _aspect_summary(aspect_edges=[3.0])
    assert list(summary["buckets"])[-2:] == ["aspect 1-3", "aspect 3-inf"]
    assert summary["buckets"]["aspect 1-3"]["num_gts"] == 2


@pytest.mark.parametrize("box_loss_type", ["iou", "giou"])
def test_dsla_box_loss_per_positive_is_its_unweighted_box_regression_loss(
    dsla_model, monkeypatch, box_loss_type
):
    pg = dsla_model.proposal_generator
    monkeypatch.setattr(pg, "box_loss_type", box_loss_type)
    batch = [_input(GT_BOXES, GT_CLASSES)]
    (probe,), levels = probe_model(dsla_model, batch)

    with torch.no_grad():
        features = dsla_model.backbone(dsla_model.preprocess_image(batch).tensor)
        points, _, distances = pg.predict([features[f] for f in pg.in_features])
    static, _, targets = pg.label_points(points, [batch[0]["instances"]])
    pos = static[0] > 0
    assert pos.any()
    pred = torch.cat(distances, dim=1)[0, pos]
    expected = box_regression_loss(pred, targets[0, pos], box_loss_type)
    torch.testing.assert_close(probe.box_losses, expected)
    torch.testing.assert_close(
        probe.giou_losses, box_regression_loss(pred, targets[0, pos], "giou")
    )

    per_gt, per_point = measure_image(probe, len(levels), (64, 64), (64, 64))
    summary = summarize([per_gt], [per_point], levels, side_edges=[32])
    y_s = static[0, pos]
    assert summary["buckets"]["all"]["box_loss_per_positive"] == pytest.approx(
        float(expected.mean()), rel=1e-5
    )
    assert summary["buckets"]["all"]["weighted_box_loss_per_positive"] == pytest.approx(
        float((y_s * expected).mean()), rel=1e-5
    )


def test_uniform_box_loss_weighting_is_diagnosed_with_the_weights_training_uses(
    dsla_model, monkeypatch
):
    # With BOX_LOSS_WEIGHTING "uniform" every positive's box loss weighs 1 in training, so the
    # diagnosis's weighted loss is the plain mean and a bucket's weight share its share of the
    # positives, not of sum(y_s).
    pg = dsla_model.proposal_generator
    monkeypatch.setattr(pg, "box_loss_weighting", "uniform")
    (probe,), levels = probe_model(dsla_model, [_input(GT_BOXES, GT_CLASSES)])
    assert len(probe.y_s) > 0 and (probe.y_s < 1).any()
    torch.testing.assert_close(probe.box_weights, torch.ones_like(probe.y_s))
    per_gt, per_point = measure_image(probe, len(levels), (64, 64), (64, 64))
    summary = summarize([per_gt], [per_point], levels, side_edges=[32])
    everything = summary["buckets"]["all"]
    assert everything["weighted_box_loss_per_positive"] == pytest.approx(
        everything["box_loss_per_positive"], rel=1e-6
    )
    level_shares = [summary["levels"][name]["box_weight_share"] for name in levels]
    on_level = [float((probe.pos_level == i).float().mean()) for i in range(len(levels))]
    assert level_shares == pytest.approx(on_level, rel=1e-6)


def test_fcos_box_loss_per_positive_is_detectron2_giou_loss_of_its_decoded_boxes():
    torch.manual_seed(0)
    model = build_model(load_config(FCOS_CONFIG)).eval()
    boxes, classes = [[4.0, 4.0, 30.0, 28.0], [30.0, 20.0, 62.0, 60.0]], [0, 1]
    batch = [_input(boxes, classes)]
    (probe,), levels = probe_model(model, batch)

    with torch.no_grad():
        features = model.backbone(model.preprocess_image(batch).tensor)
        features = [features[f] for f in model.head_in_features]
        pred_logits, pred_deltas, pred_ctr = model.dense_predictions(model.head(features))
        anchors = model.anchor_generator(features)
        labels, matched = model.label_anchors(anchors, [batch[0]["instances"]])
        pos = labels[0] != model.num_classes
        assert pos.any()
        decoded = model.box2box_transform.apply_deltas(
            torch.cat(pred_deltas, dim=1)[0, pos], Boxes.cat(anchors).tensor[pos]
        )
        with EventStorage():
            losses = model.losses(anchors, pred_logits, labels, pred_deltas, matched, pred_ctr)
    expected = giou_loss(decoded, matched[0][pos], reduction="none")
    torch.testing.assert_close(probe.box_losses, expected)
    torch.testing.assert_close(probe.giou_losses, expected)
    # detectron2 sums the same losses and divides by its running normalizer.
    assert float(losses["loss_fcos_loc"] * model.loss_normalizer) == pytest.approx(
        float(expected.sum()), rel=1e-5
    )

    per_gt, per_point = measure_image(probe, len(levels), (64, 64), (64, 64))
    bucket = summarize([per_gt], [per_point], levels, side_edges=[32])["buckets"]["all"]
    # y_s = 1: weighting changes nothing, and each positive has the same share of the weight.
    assert bucket["weighted_box_loss_per_positive"] == pytest.approx(
        bucket["box_loss_per_positive"]
    )
    assert bucket["box_loss_per_positive"] == pytest.approx(float(expected.mean()), rel=1e-5)


def _report(summary, meta_architecture):
    return {
        "config_file": f"{meta_architecture}.yaml",
        "meta_architecture": meta_architecture,
        "dataset": "hand",
        "num_images": 1,
        "checkpoints": [{"weights": "", "iteration": 9, **summary}],
    }


def test_compare_puts_figures_side_by_side_with_the_difference(tmp_path, capsys):
    _, first = _aspect_summary()
    # B's candidate for B is exact (IoU 1), C's is missing.
    _, second = _aspect_summary(ASPECT_CANDIDATES[:1] + [[30.0, 0.0, 70.0, 20.0]])
    paths = []
    for name, summary in (("DSLA", first), ("FCOS", second)):
        write_diagnosis(_report(summary, name), str(tmp_path / name))
        paths.append(str(tmp_path / name / "diagnosis.json"))

    tool = _tool()
    output = tmp_path / "comparison"
    args = ["--compare", *paths, "--names", "DSLA", "FCOS", "--output", str(output)]
    text = tool.main(tool.argument_parser().parse_args(args))
    assert capsys.readouterr().out == text == (output / "comparison.md").read_text()
    assert text.startswith("# DSLA vs FCOS")

    def section(title):
        return text.split(f"## {title}\n")[1].split("\n## ")[0]

    assert "| figure | DSLA | FCOS | DSLA − FCOS |" in section("aspect 1.5-3 (max(w / h, h / w))")
    assert "| top cand IoU | 0.75 | 1.00 | -0.25 |" in section("aspect 1.5-3 (max(w / h, h / w))")
    thin = section("aspect 3-inf (max(w / h, h / w))")
    assert "| GTs | 2 | 2 | +0 |" in thin
    assert "| top cand ≥0.5 | 50% | 0% | +50 pp |" in thin
    # FCOS has no candidate for C or D: no mean IoU, no difference.
    assert "| top cand IoU | 0.50 | - | - |" in thin
    assert "## level p3" in text

    # Buckets of other edges are named, not compared.
    _, other = _aspect_summary(aspect_edges=[3.0])
    text = compare_diagnoses(_report(first, "DSLA"), _report(other, "FCOS"), ("DSLA", "FCOS"))
    assert "Not in both diagnoses, not compared: aspect 1-1.5, aspect 1.5-3, aspect 1-3." in text
    assert "## aspect 3-inf" in text

    # Measuring still needs its config, dataset and output.
    with pytest.raises(SystemExit):
        tool.main(tool.argument_parser().parse_args(["--dataset", "shapes_val"]))
