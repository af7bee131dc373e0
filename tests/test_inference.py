"""Candidate selection at inference as the authors do it (docs/method.md, "Inference"): top points
per level, then the threshold."""

import math

import pytest
import torch
from torch import nn

from dsla.label_assignment import level_points
from dsla.modeling import DSLAProposalGenerator


def _generator(**kwargs):
    args = dict(
        two_stage=False,
        head=nn.Identity(),
        in_features=["p3"],
        strides=[8],
        regress_ranges=[(0.0, math.inf)],
        num_classes=2,
        score_thresh_test=0.05,
        topk_candidates_test=2,
    )
    args.update(kwargs)
    return DSLAProposalGenerator(**args)


def _logits(scores):
    return torch.tensor(scores).logit()


# Scores of three points and two classes. Threshold first, then the top 2 (point, class) pairs (the
# old rule) keeps only point 0's two pairs. The authors' rule keeps the 2 points with the highest
# best score (0 and 1) and then their pairs above 0.05: point 1's class 0 comes in, its class 1
# (0.04) and point 2 (0.7, 0.1) stay out.
SCORES = [[0.9, 0.85], [0.8, 0.04], [0.7, 0.1]]


def test_top_points_by_best_class_score_then_threshold():
    point_idx, class_idx, scores = _generator().select_candidates(_logits(SCORES))
    pairs = sorted(zip(point_idx.tolist(), class_idx.tolist(), scores.tolist()))
    assert [p[:2] for p in pairs] == [(0, 0), (0, 1), (1, 0)]
    assert [p[2] for p in pairs] == pytest.approx([0.9, 0.85, 0.8])


def test_inference_keeps_every_class_of_the_top_points_and_multiplies_nothing_into_the_score():
    # Points 16 pixels apart with 4-pixel boxes: nothing overlaps, so NMS removes nothing.
    points = [level_points(1, 3, 16, 0.0)]
    distances = torch.full((1, 3, 4), 4.0)
    result = _generator().inference(points, [_logits(SCORES)[None]], [distances], [(64, 64)])[0]
    assert result.scores.tolist() == pytest.approx([0.9, 0.85, 0.8])
    assert result.pred_classes.tolist() == [0, 1, 0]
    assert result.pred_boxes.tensor.tolist() == [[0, 0, 4, 4], [0, 0, 4, 4], [12, 0, 20, 4]]


def test_top_k_is_clamped_to_the_number_of_points():
    point_idx, _, _ = _generator(topk_candidates_test=1000).select_candidates(_logits(SCORES))
    assert sorted(set(point_idx.tolist())) == [0, 1, 2]


def test_a_nan_score_neither_becomes_a_candidate_nor_pushes_one_out():
    # torch.topk ranks NaN first: without care, the NaN point would take point 1's place among the
    # top 2.
    logits = _logits([[0.9, 0.2], [0.8, 0.3], [0.5, 0.5]])
    logits[2, 1] = float("nan")
    point_idx, class_idx, scores = _generator().select_candidates(logits)
    assert sorted(zip(point_idx.tolist(), class_idx.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert torch.isfinite(scores).all()


def test_non_finite_boxes_are_dropped_and_the_rest_of_the_image_kept():
    # Four points 16 pixels apart: point 1's box overflows to inf, point 2's scores are NaN.
    points = [level_points(1, 4, 16, 0.0)]
    logits = _logits([[0.9, 0.01], [0.8, 0.01], [0.5, 0.01], [0.7, 0.01]])
    logits[2] = float("nan")
    distances = torch.full((1, 4, 4), 4.0)
    distances[0, 1, 2] = float("inf")
    result = _generator(topk_candidates_test=3).inference(
        points, [logits[None]], [distances], [(64, 64)]
    )[0]
    assert result.scores.tolist() == pytest.approx([0.9, 0.7])
    assert result.pred_boxes.tensor.tolist() == [[0, 0, 4, 4], [44, 0, 52, 4]]


def test_nms_removes_a_same_class_box_at_iou_0_7_and_keeps_one_at_0_5_and_other_classes():
    # Four points 16 pixels apart on one row, each predicting one class. A = (0, 0, 60, 20) of area
    # 1200; B = (0, 0, 60, 14) and D = B have IoU 840 / 1200 = 0.7 with A, C = (0, 0, 60, 10) has
    # 600 / 1200 = 0.5. At the 0.6 threshold NMS removes B (class 0, like A), keeps C (class 0) and
    # D (class 1). C overlaps the removed B by 0.71: a removed box removes nothing.
    points = [level_points(1, 4, 16, 0.5)]  # (8, 8), (24, 8), (40, 8), (56, 8)
    distances = torch.tensor([[[8.0, 8, 52, 12], [24, 8, 36, 6], [40, 8, 20, 2], [56, 8, 4, 6]]])
    logits = _logits([[0.9, 0.01], [0.8, 0.01], [0.7, 0.01], [0.01, 0.75]])
    gen = _generator(topk_candidates_test=1000, nms_thresh_test=0.6)
    result = gen.inference(points, [logits[None]], [distances], [(64, 64)])[0]
    assert result.scores.tolist() == pytest.approx([0.9, 0.75, 0.7])
    assert result.pred_classes.tolist() == [0, 1, 0]
    assert result.pred_boxes.tensor.tolist() == [[0, 0, 60, 20], [0, 0, 60, 14], [0, 0, 60, 10]]


def test_each_level_keeps_its_own_top_points_and_decodes_at_its_own_stride():
    # Top 2 points per level: level 0 (stride 8) keeps 0.9 and 0.8, not 0.7; level 1 (stride 16)
    # keeps its 0.6 and 0.5, which a top 2 over both levels together would drop.
    gen = _generator(
        in_features=["p3", "p4"],
        strides=[8, 16],
        regress_ranges=[(0.0, 64.0), (64.0, math.inf)],
        point_offset=0.5,
    )
    points = gen.make_points([(1, 3), (1, 2)])  # (4, 4), (12, 4), (20, 4); (8, 8), (24, 8)
    logits = [
        _logits([[0.9, 0.01], [0.8, 0.01], [0.7, 0.01]])[None],
        _logits([[0.01, 0.6], [0.5, 0.01]])[None],
    ]
    distances = [torch.ones(1, 3, 4), torch.ones(1, 2, 4)]
    result = gen.inference(points, logits, distances, [(64, 64)])[0]
    assert result.scores.tolist() == pytest.approx([0.9, 0.8, 0.6, 0.5])
    assert result.pred_classes.tolist() == [0, 0, 1, 0]
    assert result.pred_boxes.tensor.tolist() == [
        [3, 3, 5, 5],
        [11, 3, 13, 5],
        [7, 7, 9, 9],
        [23, 7, 25, 9],
    ]


def test_each_image_of_a_batch_gets_its_own_detections_clipped_to_its_own_size():
    # Image 0: class 0 at point 0; image 1 (smaller): class 1 at point 2, its box clipped at 24.
    points = [level_points(1, 3, 16, 0.0)]  # (0, 0), (16, 0), (32, 0)
    logits = torch.stack(
        [
            _logits([[0.9, 0.01], [0.01, 0.01], [0.01, 0.01]]),
            _logits([[0.01, 0.01]] * 2 + [[0.01, 0.8]]),
        ]
    )
    distances = torch.stack([torch.full((3, 4), 4.0), torch.full((3, 4), 10.0)])
    results = _generator().inference(points, [logits], [distances], [(64, 64), (24, 40)])
    assert [r.image_size for r in results] == [(64, 64), (24, 40)]
    assert results[0].scores.tolist() == pytest.approx([0.9])
    assert results[0].pred_boxes.tensor.tolist() == [[0, 0, 4, 4]]
    assert results[1].scores.tolist() == pytest.approx([0.8])
    assert results[1].pred_classes.tolist() == [1]
    assert results[1].pred_boxes.tensor.tolist() == [[22, 0, 40, 10]]
