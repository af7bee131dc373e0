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
