"""
The DSLA static smooth label ``y_s = ctr * h`` and the dynamic label ``y_d`` (docs/method.md, "The
label"): hand-computed cases for every step, tie-breaking, chunking, input checks, and properties on
random images.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import dsla
import dsla.label_assignment as la
from dsla import dynamic_smooth_labels, smooth_label_targets
from dsla.label_assignment import interval_relaxation, level_points

NUM_CLASSES = 5
FPN_STRIDES = (8, 16, 32, 64, 128)
FPN_RANGES = ((0.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, math.inf))
HYPOTHESIS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _assign(points, strides, ranges, boxes, classes=None, **kwargs):
    """`smooth_label_targets` on lists of numbers; classes default to 0, 1, 2, ..."""
    points = torch.tensor(points, dtype=torch.float32).reshape(-1, 2)
    strides = torch.tensor(strides, dtype=torch.float32).reshape(-1)
    ranges = torch.tensor(ranges, dtype=torch.float32).reshape(-1, 2)
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if classes is None:
        classes = list(range(boxes.shape[0]))
    classes = torch.tensor(classes, dtype=torch.long).reshape(-1)
    return smooth_label_targets(points, strides, ranges, boxes, classes, NUM_CLASSES, **kwargs)


def _assign_one(point, stride, lo_hi, boxes, classes=None, **kwargs):
    """One point: returns (y_s, class, [l, t, r, b])."""
    scores, cls, targets = _assign([point], [stride], [lo_hi], boxes, classes, **kwargs)
    return scores.item(), cls.item(), targets[0].tolist()


def _fpn_points(height, width, offset=0.5):
    """Points, strides and regress ranges of all five default levels of a height x width image."""
    points, strides, ranges = [], [], []
    for stride, lo_hi in zip(FPN_STRIDES, FPN_RANGES):
        pts = level_points(math.ceil(height / stride), math.ceil(width / stride), stride, offset)
        points.append(pts)
        strides.append(torch.full((len(pts),), float(stride)))
        ranges.append(torch.tensor(lo_hi).expand(len(pts), 2))
    return torch.cat(points), torch.cat(strides), torch.cat(ranges)


def _random_boxes(num_boxes, size, generator, min_wh=1.0, max_wh=None):
    """Continuous random XYXY boxes with corners in (and a little beyond) a size x size image,
    mostly small."""
    xy0 = torch.rand(num_boxes, 2, generator=generator) * size - 0.1 * size
    wh = min_wh + torch.rand(num_boxes, 2, generator=generator) ** 2 * (max_wh or size)
    return torch.cat([xy0, xy0 + wh], dim=1)


def _reference_assign(points, strides, ranges, boxes, classes, gamma, core_zone, radius):
    """
    The spec's section 1 written out per point and box in Python floats (float64), with the
    documented tie-break (highest y_s, then smaller area, then lower index). Independent of the
    vectorized implementation.
    """
    out_scores, out_classes, out_boxes = [], [], []
    for (x, y), s, (lo, hi) in zip(points.tolist(), strides.tolist(), ranges.tolist()):
        best = (0.0, math.inf, -1)
        for j, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            l, t, r, b = x - x0, y - y0, x1 - x, y1 - y
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            if radius > 0:
                sx0, sy0 = max(cx - radius * s, x0), max(cy - radius * s, y0)
                sx1, sy1 = min(cx + radius * s, x1), min(cy + radius * s, y1)
                inside = sx0 < x < sx1 and sy0 < y < sy1
            else:
                inside = min(l, t, r, b) > 0
            if not inside:
                continue
            ctr = math.sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))
            if core_zone and abs(x - cx) <= s / 2 and abs(y - cy) <= s / 2:
                ctr = 1.0
            m = max(l, t, r, b)
            lo_r, hi_r = lo * (1 - gamma), hi * (1 + gamma)
            if lo <= m <= hi:
                h = 1.0
            elif lo_r <= m < lo:
                h = (m - lo_r) / (lo - lo_r)
            elif hi < m <= hi_r:
                h = (hi_r - m) / (hi_r - hi)
            else:
                h = 0.0
            y_s = ctr * h
            area = (x1 - x0) * (y1 - y0)
            if y_s > best[0] or (y_s == best[0] and y_s > 0 and area < best[1]):
                best = (y_s, area, j)
        out_scores.append(best[0])
        out_classes.append(int(classes[best[2]]) if best[2] >= 0 else NUM_CLASSES)
        out_boxes.append(boxes[best[2]].tolist() if best[2] >= 0 else None)
    return out_scores, out_classes, out_boxes


# --------------------------------------------------------------------------------------------------
# Centerness and the core zone


def test_point_in_core_zone_gets_centerness_one():
    # Box (40, 40, 64, 64), center (52, 52); point (50, 50), stride 8: |50 - 52| = 2 <= 8/2 on both
    # axes -> core. l, t, r, b = 10, 10, 14, 14; m = 14 in (0, 64) -> h = 1; y_s = 1.
    score, cls, targets = _assign_one([50, 50], 8, [0, 64], [[40, 40, 64, 64]], [3])
    assert score == 1.0
    assert cls == 3
    assert targets == [10, 10, 14, 14]


def test_without_core_zone_the_centered_point_keeps_fcos_centerness():
    # Same case, core zone off: ctr = sqrt(10/14 * 10/14) = 10/14 = 0.714285...
    score, _, _ = _assign_one([50, 50], 8, [0, 64], [[40, 40, 64, 64]], core_zone=False)
    assert score == pytest.approx(10 / 14, rel=1e-6)


def test_core_zone_boundary_is_half_a_stride_inclusive():
    # Box (0, 0, 40, 40), center (20, 20), stride 8. Point (24, 20): |dx| = 4 = s/2 -> core, y_s =
    # 1. Point (25, 20): |dx| = 5 > 4 -> l, r = 25, 15; ctr = sqrt(15/25 * 20/20) = sqrt(0.6) =
    # 0.774596...
    scores, _, _ = _assign([[24, 20], [25, 20]], [8, 8], [[0, 64], [0, 64]], [[0, 0, 40, 40]])
    assert scores[0].item() == 1.0
    assert scores[1].item() == pytest.approx(math.sqrt(0.6), rel=1e-6)


def test_off_center_point_gets_fcos_centerness_and_ltrb_targets():
    # Box (40, 40, 100, 70), center (70, 55); point (50, 60), stride 8: |dx| = 20 > 4, not core.
    # l, t, r, b = 10, 20, 50, 10; ctr = sqrt(min(10, 50)/max(10, 50) * min(20, 10)/max(20, 10))
    #   = sqrt(0.2 * 0.5) = sqrt(0.1) = 0.316227...; m = 50 in (0, 64) -> h = 1.
    score, cls, targets = _assign_one([50, 60], 8, [0, 64], [[40, 40, 100, 70]], [2])
    assert score == pytest.approx(math.sqrt(0.1), rel=1e-6)
    assert cls == 2
    assert targets == [10, 20, 50, 10]


# --------------------------------------------------------------------------------------------------
# Interval relaxation


def test_lower_shoulder_weight_rises_linearly_from_relaxed_lo():
    # Level (64, 128), stride 16, gamma 0.2: lo' = 64 * 0.8 = 51.2.
    # Box (40, 40, 160, 160) centered on (100, 100): core zone, ctr = 1; m = 60 in [51.2, 64)
    # -> h = (60 - 51.2) / (64 - 51.2) = 8.8 / 12.8 = 0.6875.
    score, _, _ = _assign_one([100, 100], 16, [64, 128], [[40, 40, 160, 160]])
    assert score == pytest.approx(0.6875, rel=1e-5)


def test_static_label_is_centerness_times_relaxation_weight():
    # Level (64, 128), stride 16, gamma 0.2. Box (40, 80, 130, 120), center (85, 100); point (100,
    # 100): |dx| = 15 > 8, not core. l, t, r, b = 60, 20, 30, 20; ctr = sqrt(30/60 * 20/20) =
    # sqrt(0.5); m = 60 -> h = 0.6875 (as above); y_s = 0.707106... * 0.6875 = 0.486135...
    score, _, targets = _assign_one([100, 100], 16, [64, 128], [[40, 80, 130, 120]])
    assert score == pytest.approx(math.sqrt(0.5) * 0.6875, rel=1e-5)
    assert targets == [60, 20, 30, 20]


def test_upper_shoulder_weight_falls_linearly_to_relaxed_hi():
    # Level (0, 64), stride 8, gamma 0.2: hi' = 64 * 1.2 = 76.8.
    # Box (30, 30, 170, 170) centered on (100, 100): ctr = 1; m = 70 in (64, 76.8]
    # -> h = (76.8 - 70) / (76.8 - 64) = 6.8 / 12.8 = 0.53125.
    score, _, targets = _assign_one([100, 100], 8, [0, 64], [[30, 30, 170, 170]])
    assert score == pytest.approx(0.53125, rel=1e-5)
    assert targets == [70, 70, 70, 70]


def test_relaxation_factor_sets_shoulder_width():
    # gamma 0.25 on level (64, 128): lo' = 48, hi' = 160. Centered boxes of half-size m, ctr = 1, so
    # y_s = h: m = 56 -> (56 - 48) / 16 = 0.5;  m = 144 -> (160 - 144) / 32 = 0.5;  m = 48 -> 0;  m
    # = 160 -> 0; m = 64 -> 1;  m = 128 -> 1;  m = 40 (< lo') -> 0;  m = 170 (> hi') -> 0.
    half_sizes = [56, 144, 48, 160, 64, 128, 40, 170]
    expected = [0.5, 0.5, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    for m, y_s in zip(half_sizes, expected):
        box = [500 - m, 500 - m, 500 + m, 500 + m]
        score, _, _ = _assign_one([500, 500], 16, [64, 128], [box], relaxation=0.25)
        assert score == pytest.approx(y_s, abs=1e-6), f"m = {m}"


@pytest.mark.parametrize("m", [80.0, 200.0])
def test_point_outside_every_relaxed_range_is_negative(m):
    # Level (0, 64), gamma 0.2 -> hi' = 76.8 < m: h = 0, so y_s = 0 even though the point is inside
    # (and core).
    score, cls, targets = _assign_one(
        [500, 500], 8, [0, 64], [[500 - m, 500 - m, 500 + m, 500 + m]]
    )
    assert score == 0.0
    assert cls == NUM_CLASSES
    assert all(math.isfinite(v) for v in targets)


def test_below_relaxed_lo_is_negative():
    # Level (64, 128), gamma 0.2: lo' = 51.2 > m = 50 -> h = 0.
    score, cls, _ = _assign_one([500, 500], 16, [64, 128], [[450, 450, 550, 550]])
    assert score == 0.0
    assert cls == NUM_CLASSES


def test_lower_shoulder_is_empty_when_lo_is_zero():
    # Level (0, 64): lo' = lo = 0, every inside point has m > 0 = lo, so small boxes get h = 1 (no
    # shoulder).
    score, _, _ = _assign_one([100, 100], 8, [0, 64], [[99, 99, 101, 101]])
    assert score == 1.0


@pytest.mark.parametrize("m", [50.0, 63.0, 64.0, 65.0, 100.0, 128.0, 128.5, 150.0])
def test_zero_relaxation_is_the_fcos_hard_indicator(m):
    # gamma = 0: h = 1 iff lo <= m <= hi, on level (64, 128); a centered box has ctr = 1, so y_s =
    # h.
    score, cls, _ = _assign_one(
        [500, 500], 16, [64, 128], [[500 - m, 500 - m, 500 + m, 500 + m]], relaxation=0.0
    )
    fcos = 1.0 if 64 <= m <= 128 else 0.0
    assert score == fcos
    assert cls == (0 if fcos else NUM_CLASSES)


def test_interval_relaxation_with_zero_gamma_matches_indicator_elementwise():
    m = torch.tensor([0.0, 10.0, 63.9, 64.0, 100.0, 128.0, 128.1, 1e6])
    lo, hi = torch.tensor(64.0), torch.tensor(128.0)
    h = interval_relaxation(m, lo, hi, 0.0)
    assert torch.equal(h, ((m >= 64) & (m <= 128)).float())


def test_negative_relaxation_is_rejected():
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        interval_relaxation(torch.tensor([10.0]), torch.tensor(0.0), torch.tensor(64.0), -0.1)


def test_infinite_hi_has_no_upper_shoulder_and_stays_finite():
    # Level (512, inf), stride 128, gamma 0.2: lo' = 409.6.
    # m = 5000 -> h = 1; m = 450 -> h = (450 - 409.6) / (512 - 409.6) = 40.4 / 102.4 = 0.39453125.
    # Both boxes centered on the point (1000, 1000), so ctr = 1 and y_s = h.
    score, _, targets = _assign_one(
        [1000, 1000], 128, [512, math.inf], [[-4000, -4000, 6000, 6000]]
    )
    assert score == 1.0
    assert targets == [5000, 5000, 5000, 5000]
    score, _, _ = _assign_one([1000, 1000], 128, [512, math.inf], [[550, 550, 1450, 1450]])
    assert score == pytest.approx(0.39453125, rel=1e-5)
    h = interval_relaxation(
        torch.tensor([1e3, 1e9, 1e30]), torch.tensor(512.0), torch.tensor(math.inf), 0.2
    )
    assert h.tolist() == [1.0, 1.0, 1.0]


# --------------------------------------------------------------------------------------------------
# Competing boxes and ties


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_highest_static_label_wins_not_smallest_area(order):
    # Point (50, 50), stride 8, level (0, 64).
    # A = (46, 40, 70, 60), area 24 * 20 = 480, center (58, 50): |dx| = 8 > 4, not core;
    #   l, t, r, b = 4, 10, 20, 10; ctr = sqrt(4/20 * 10/10) = sqrt(0.2) = 0.447...; y_s = 0.447.
    # B = (30, 30, 70, 70), area 1600, centered on the point: core, m = 20 -> y_s = 1.
    # FCOS (smallest area) would pick A; DSLA picks B.
    boxes = [[46, 40, 70, 60], [30, 30, 70, 70]]
    classes = [1, 4]
    score, cls, targets = _assign_one(
        [50, 50], 8, [0, 64], [boxes[i] for i in order], [classes[i] for i in order]
    )
    assert score == 1.0
    assert cls == 4
    assert targets == [20, 20, 20, 20]


@pytest.mark.parametrize("chunk_pairs", [1, 1 << 21])
@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_exact_tie_goes_to_smaller_box_in_any_order(monkeypatch, chunk_pairs, order):
    # Both boxes centered on (50, 50): core zone and m <= 64, so y_s = 1 for both (an exact tie).
    # A = (40, 40, 60, 60), area 400; B = (35, 35, 65, 65), area 900 -> A wins in either order and
    # whether or not the two boxes land in the same chunk.
    monkeypatch.setattr(la, "MAX_PAIRS_PER_CHUNK", chunk_pairs)
    boxes = [[40, 40, 60, 60], [35, 35, 65, 65]]
    classes = [1, 2]
    score, cls, targets = _assign_one(
        [50, 50], 8, [0, 64], [boxes[i] for i in order], [classes[i] for i in order]
    )
    assert score == 1.0
    assert cls == 1
    assert targets == [10, 10, 10, 10]


@pytest.mark.parametrize("chunk_pairs", [1, 1 << 21])
def test_exact_tie_with_equal_areas_goes_to_lower_index(monkeypatch, chunk_pairs):
    # A = (40, 40, 60, 60): centered, y_s = 1, area 400, targets (10, 10, 10, 10).
    # C = (42, 38, 62, 58): center (52, 48), |dx| = |dy| = 2 <= 4 -> core; m = 12 -> y_s = 1; area
    # 20 * 20 = 400;   targets (8, 12, 12, 8). Same y_s and area: the box listed first wins.
    monkeypatch.setattr(la, "MAX_PAIRS_PER_CHUNK", chunk_pairs)
    a, c = [40, 40, 60, 60], [42, 38, 62, 58]
    _, cls, targets = _assign_one([50, 50], 8, [0, 64], [a, c], [1, 2])
    assert (cls, targets) == (1, [10, 10, 10, 10])
    _, cls, targets = _assign_one([50, 50], 8, [0, 64], [c, a], [2, 1])
    assert (cls, targets) == (2, [8, 12, 12, 8])


def test_tie_break_by_area_applies_among_the_best_only():
    # Tiny box T = (49, 49, 52, 52) (area 9): l, t, r, b = 1, 1, 2, 2, center (50.5, 50.5) -> core,
    # y_s = 1. Big box B = (30, 30, 70, 70) (area 1600): y_s = 1. Small off-center box S = (46, 40,
    # 70, 60) (area 480): y_s = sqrt(0.2) < 1. The smallest box among those with y_s = 1 wins, i.e.
    # T.
    score, cls, targets = _assign_one(
        [50, 50], 8, [0, 64], [[30, 30, 70, 70], [46, 40, 70, 60], [49, 49, 52, 52]], [0, 1, 2]
    )
    assert (score, cls) == (1.0, 2)
    assert targets == [1, 1, 2, 2]


# --------------------------------------------------------------------------------------------------
# "Inside" and center sampling


@pytest.mark.parametrize("point", [[40, 50], [60, 50], [50, 40], [50, 60], [40, 40], [60, 60]])
def test_point_on_box_edge_is_not_inside(point):
    # Box (40, 40, 60, 60): each point has one of l, t, r, b equal to 0, so min(l, t, r, b) > 0
    # fails.
    score, cls, _ = _assign_one(point, 8, [0, 64], [[40, 40, 60, 60]], [0])
    assert score == 0.0
    assert cls == NUM_CLASSES


def test_point_just_inside_box_edge_is_positive():
    # Point (40.5, 50) in box (40, 40, 60, 60): l, t, r, b = 0.5, 10, 19.5, 10;
    # ctr = sqrt(0.5/19.5 * 1) = 0.160128...
    score, _, _ = _assign_one([40.5, 50], 8, [0, 64], [[40, 40, 60, 60]], [0])
    assert score == pytest.approx(math.sqrt(0.5 / 19.5), rel=1e-5)


def test_center_sampling_keeps_only_points_strictly_inside_the_radius_square():
    # Box (0, 0, 100, 100), center (50, 50); stride 8, R = 1.5 -> square half-size 12: (38, 38, 62,
    # 62). (61, 50): |dx| = 11 < 12 -> inside; l, r = 61, 39; t = b = 50; not core (11 > 4); m = 61
    # <= 64;   y_s = sqrt(39/61) = 0.799590...
    # (62, 50): on the square's edge -> negative. (70, 50): inside the box but outside the square ->
    # negative. (50, 50): the center -> core zone, m = 50 -> y_s = 1.
    points = [[61, 50], [62, 50], [70, 50], [50, 50]]
    scores, classes, _ = _assign(
        points, [8] * 4, [[0, 64]] * 4, [[0, 0, 100, 100]], center_sampling_radius=1.5
    )
    assert scores[0].item() == pytest.approx(math.sqrt(39 / 61), rel=1e-5)
    assert scores[1].item() == 0.0
    assert scores[2].item() == 0.0
    assert scores[3].item() == 1.0
    assert classes.tolist() == [0, NUM_CLASSES, NUM_CLASSES, 0]
    # Without center sampling the two middle points are inside the box and positive.
    scores, _, _ = _assign(points, [8] * 4, [[0, 64]] * 4, [[0, 0, 100, 100]])
    assert (scores > 0).all()


def test_center_sampling_radius_scales_with_the_point_stride():
    # Same box and point (61, 50) at stride 16 and R = 1.5: half-size 24 > |dx| = 11 -> inside.
    # At stride 4: half-size 6 < 11 -> negative.
    scores, _, _ = _assign(
        [[61, 50], [61, 50]],
        [16, 4],
        [[0, 64], [0, 64]],
        [[0, 0, 100, 100]],
        center_sampling_radius=1.5,
    )
    assert scores[0].item() > 0
    assert scores[1].item() == 0.0


def test_center_sampling_square_is_clipped_to_the_box():
    # Narrow box (0, 0, 10, 100), center (5, 50); stride 8, R = 1.5 -> square (-7, 38, 17, 62),
    # clipped to (0, 38, 10, 62). (12, 50) lies in the square but outside the box -> negative. (10,
    # 50) is on the clipped edge -> negative. (9, 50): inside; l, r = 9, 1; ctr = sqrt(1/9) = 1/3
    # (|dx| = 4 <= 4 -> core zone, y_s = 1). (-2, 50): left of the box -> negative.
    points = [[12, 50], [10, 50], [9, 50], [-2, 50]]
    scores, classes, _ = _assign(
        points, [8] * 4, [[0, 64]] * 4, [[0, 0, 10, 100]], center_sampling_radius=1.5
    )
    assert scores.tolist() == [0.0, 0.0, 1.0, 0.0]
    assert classes.tolist() == [NUM_CLASSES, NUM_CLASSES, 0, NUM_CLASSES]
    score, _, _ = _assign_one(
        [9, 50], 8, [0, 64], [[0, 0, 10, 100]], center_sampling_radius=1.5, core_zone=False
    )
    assert score == pytest.approx(1 / 3, rel=1e-5)


# --------------------------------------------------------------------------------------------------
# Degenerate images and boxes


def test_image_without_boxes_is_all_negative():
    points, strides, ranges = _fpn_points(64, 96)
    boxes = torch.zeros(0, 4)
    classes = torch.zeros(0, dtype=torch.long)
    scores, cls, targets = smooth_label_targets(
        points, strides, ranges, boxes, classes, NUM_CLASSES
    )
    num_points = points.shape[0]
    assert scores.shape == (num_points,) and scores.dtype.is_floating_point
    assert cls.shape == (num_points,) and cls.dtype == torch.long
    assert targets.shape == (num_points, 4)
    assert (scores == 0).all()
    assert (cls == NUM_CLASSES).all()
    assert torch.isfinite(targets).all()


@pytest.mark.parametrize("radius", [0.0, 1.5])
def test_zero_area_and_negative_size_boxes_are_never_positive(radius):
    # Zero width, zero height, a point box, and two boxes with x1 < x0 and/or y1 < y0, all around
    # (48, 48).
    boxes = [
        [48, 40, 48, 56],
        [40, 48, 56, 48],
        [48, 48, 48, 48],
        [56, 40, 40, 56],
        [56, 56, 40, 40],
    ]
    points, strides, ranges = _fpn_points(96, 96)
    points = torch.cat([points, torch.tensor([[48.0, 48.0], [47.0, 47.0], [50.0, 50.0]])])
    strides = torch.cat([strides, torch.tensor([8.0, 8.0, 8.0])])
    ranges = torch.cat([ranges, torch.tensor([[0.0, 64.0]] * 3)])
    scores, cls, targets = smooth_label_targets(
        points,
        strides,
        ranges,
        torch.tensor(boxes, dtype=torch.float32),
        torch.arange(5),
        NUM_CLASSES,
        center_sampling_radius=radius,
    )
    assert (scores == 0).all()
    assert (cls == NUM_CLASSES).all()
    assert torch.isfinite(targets).all()


def test_degenerate_boxes_do_not_disturb_a_valid_box():
    # The valid box (40, 40, 60, 60) centered on (50, 50) gives y_s = 1 and targets (10, 10, 10,
    # 10); zero-area and inverted boxes through the same point must not take it, nor make anything
    # non-finite.
    boxes = [[50, 40, 50, 60], [60, 60, 40, 40], [40, 40, 60, 60], [50, 50, 50, 50]]
    score, cls, targets = _assign_one([50, 50], 8, [0, 64], boxes, [0, 1, 2, 3])
    assert (score, cls, targets) == (1.0, 2, [10, 10, 10, 10])


def test_box_targets_are_distances_to_the_winning_box_for_every_positive():
    points, strides, ranges = _fpn_points(128, 160)
    gen = torch.Generator().manual_seed(1)
    boxes = _random_boxes(12, 160, gen, min_wh=4.0)
    classes = torch.randint(0, NUM_CLASSES, (12,), generator=gen)
    scores, cls, targets = smooth_label_targets(
        points, strides, ranges, boxes, classes, NUM_CLASSES
    )
    pos = scores > 0
    assert pos.sum() > 10
    # Reconstruct the box from (x - l, y - t, x + r, y + b): it must be one of the gt boxes, of the
    # assigned class.
    rebuilt = torch.cat([points[pos] - targets[pos, :2], points[pos] + targets[pos, 2:]], dim=1)
    dist = (rebuilt[:, None, :] - boxes[None, :, :]).abs().amax(dim=2)  # [Pos, N]
    nearest = dist.argmin(dim=1)
    assert (dist.min(dim=1).values < 1e-3).all()
    assert torch.equal(classes[nearest], cls[pos])


# --------------------------------------------------------------------------------------------------
# Input checks


def _valid_inputs():
    points = torch.tensor([[10.0, 10.0], [20.0, 20.0]])
    strides = torch.tensor([8.0, 8.0])
    ranges = torch.tensor([[0.0, 64.0], [0.0, 64.0]])
    boxes = torch.tensor([[0.0, 0.0, 30.0, 30.0], [5.0, 5.0, 15.0, 15.0]])
    classes = torch.tensor([0, 1])
    return dict(
        points=points, strides=strides, regress_ranges=ranges, gt_boxes=boxes, gt_classes=classes
    )


@pytest.mark.parametrize(
    "name, value, message",
    [
        (
            "gt_boxes",
            torch.tensor([[0.0, 0.0, 30.0, 30.0], [5.0, math.nan, 15.0, 15.0]]),
            "gt_boxes",
        ),
        (
            "gt_boxes",
            torch.tensor([[0.0, 0.0, math.inf, 30.0], [5.0, 5.0, 15.0, 15.0]]),
            "gt_boxes",
        ),
        ("gt_classes", torch.tensor([0, NUM_CLASSES]), "gt_classes"),
        ("gt_classes", torch.tensor([-1, 0]), "gt_classes"),
        ("points", torch.zeros(2, 3), "points"),
        ("points", torch.zeros(2), "points"),
        ("strides", torch.ones(3), "strides"),
        ("regress_ranges", torch.ones(2), "regress_ranges"),
        ("gt_boxes", torch.zeros(2, 5), "gt_boxes"),
        ("gt_classes", torch.tensor([0, 1, 2]), "gt_classes"),
        ("gt_classes", torch.tensor([0.0, 1.0]), "gt_classes must be an integer"),
        ("points", torch.tensor([[10.0, 10.0], [math.nan, 20.0]]), "points has non-finite"),
        ("points", torch.tensor([[10.0, -math.inf], [20.0, 20.0]]), "points has non-finite"),
        ("strides", torch.tensor([8.0, math.nan]), "strides"),
        ("strides", torch.tensor([8.0, 0.0]), "strides"),
        ("regress_ranges", torch.tensor([[0.0, 64.0], [math.nan, 64.0]]), "regress_ranges"),
        ("regress_ranges", torch.tensor([[0.0, math.nan], [0.0, 64.0]]), "regress_ranges"),
    ],
)
def test_invalid_inputs_raise_value_error_naming_the_argument(name, value, message):
    inputs = _valid_inputs()
    inputs[name] = value
    with pytest.raises(ValueError, match=message):
        smooth_label_targets(num_classes=NUM_CLASSES, **inputs)


def test_nan_box_error_names_non_finite_coordinates():
    inputs = _valid_inputs()
    inputs["gt_boxes"][1, 2] = math.nan
    with pytest.raises(ValueError, match="gt_boxes has non-finite coordinates in rows \\[1\\]"):
        smooth_label_targets(num_classes=NUM_CLASSES, **inputs)


def test_nan_points_raise_even_without_boxes():
    # Otherwise the negatives' box targets would be NaN, and smooth_label_targets promises finite
    # values.
    inputs = _valid_inputs()
    inputs["points"][0, 0] = math.nan
    inputs["gt_boxes"] = torch.zeros(0, 4)
    inputs["gt_classes"] = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match="points has non-finite coordinates"):
        smooth_label_targets(num_classes=NUM_CLASSES, **inputs)


def test_infinite_hi_in_regress_ranges_is_valid_input():
    inputs = _valid_inputs()
    inputs["regress_ranges"][:, 1] = math.inf
    scores, _, _ = smooth_label_targets(num_classes=NUM_CLASSES, **inputs)
    assert (scores > 0).all()


def test_integer_classes_of_any_width_give_long_classes():
    inputs = _valid_inputs()
    inputs["gt_classes"] = inputs["gt_classes"].int()
    _, classes, _ = smooth_label_targets(num_classes=NUM_CLASSES, **inputs)
    assert classes.dtype == torch.long


# --------------------------------------------------------------------------------------------------
# Against a per-pair reference, and chunking


@pytest.mark.parametrize(
    "gamma, core_zone, radius", [(0.2, True, 0.0), (0.0, False, 0.0), (0.3, True, 1.5)]
)
def test_matches_per_pair_reference_of_the_spec_on_a_random_image(gamma, core_zone, radius):
    points, strides, ranges = _fpn_points(160, 224)
    gen = torch.Generator().manual_seed(2)
    # Sizes spread over all levels so that every shoulder is exercised.
    boxes = _random_boxes(30, 224, gen, min_wh=2.0, max_wh=600.0)
    classes = torch.randint(0, NUM_CLASSES, (30,), generator=gen)
    scores, cls, targets = smooth_label_targets(
        points,
        strides,
        ranges,
        boxes,
        classes,
        NUM_CLASSES,
        relaxation=gamma,
        core_zone=core_zone,
        center_sampling_radius=radius,
    )
    ref_scores, ref_classes, ref_boxes = _reference_assign(
        points.double(), strides, ranges, boxes.double(), classes, gamma, core_zone, radius
    )
    assert torch.allclose(scores.double(), torch.tensor(ref_scores, dtype=torch.float64), atol=1e-5)
    assert cls.tolist() == ref_classes
    for i, ref_box in enumerate(ref_boxes):
        if ref_box is not None:
            x, y = points[i].tolist()
            expected = [x - ref_box[0], y - ref_box[1], ref_box[2] - x, ref_box[3] - y]
            assert targets[i].tolist() == pytest.approx(expected, abs=1e-3)
    # The random image really has positives on several levels and in both shoulders.
    assert len(set(strides[scores > 0].tolist())) >= 3
    assert ((scores > 0) & (scores < 1)).sum() > 10


def _crowded_image(seed, num_boxes=300):
    """Hundreds of boxes, many exact duplicates and equal-area copies, so that ties happen across
    chunks."""
    gen = torch.Generator().manual_seed(seed)
    boxes = _random_boxes(num_boxes // 2, 192, gen, min_wh=2.0)
    # Integer-shifted copies have the same area and often the same y_s (core zone); exact duplicates
    # tie fully.
    shifted = (
        boxes[: num_boxes // 4] + torch.randint(-3, 4, (num_boxes // 4, 1), generator=gen).float()
    )
    boxes = torch.cat([boxes, shifted, boxes[: num_boxes - boxes.shape[0] - shifted.shape[0]]])
    boxes = boxes[torch.randperm(boxes.shape[0], generator=gen)]
    classes = torch.randint(0, NUM_CLASSES, (boxes.shape[0],), generator=gen)
    return boxes, classes


@pytest.mark.parametrize("max_pairs, seed", [(1, 0), (997, 1), (5000, 2)])
def test_chunked_assignment_equals_unchunked_on_crowded_images(monkeypatch, max_pairs, seed):
    # 769 points: chunks of 1, 1 and 6 boxes over 300 boxes whose exact ties straddle chunk
    # boundaries.
    points, strides, ranges = _fpn_points(192, 192, offset=0.0)
    boxes, classes = _crowded_image(seed)
    for radius in (0.0, 1.5):
        expected = smooth_label_targets(
            points, strides, ranges, boxes, classes, NUM_CLASSES, center_sampling_radius=radius
        )
        with monkeypatch.context() as patch:
            patch.setattr(la, "MAX_PAIRS_PER_CHUNK", max_pairs)
            chunked = smooth_label_targets(
                points, strides, ranges, boxes, classes, NUM_CLASSES, center_sampling_radius=radius
            )
        for a, b in zip(expected, chunked):
            assert torch.equal(a, b)


def test_crowded_image_with_many_exact_ties_matches_per_pair_reference():
    points, strides, ranges = _fpn_points(192, 192, offset=0.0)
    boxes, classes = _crowded_image(0)
    scores, cls, _ = smooth_label_targets(points, strides, ranges, boxes, classes, NUM_CLASSES)
    ref_scores, ref_classes, _ = _reference_assign(
        points, strides, ranges, boxes, classes, 0.2, True, 0.0
    )
    assert torch.allclose(scores.double(), torch.tensor(ref_scores, dtype=torch.float64), atol=1e-5)
    # Exact duplicates tie in y_s and area: the first copy's class must win, as in the reference.
    assert cls.tolist() == ref_classes
    # The image is a real tie test: many points lie in the core zone (y_s = 1) of two or more boxes.
    x, y = points[:, 0:1], points[:, 1:2]
    core = (
        ((x - (boxes[:, 0] + boxes[:, 2]) / 2).abs() <= strides[:, None] / 2)
        & ((y - (boxes[:, 1] + boxes[:, 3]) / 2).abs() <= strides[:, None] / 2)
        & (x > boxes[:, 0])
        & (x < boxes[:, 2])
        & (y > boxes[:, 1])
        & (y < boxes[:, 3])
    )
    assert (core.sum(dim=1) >= 2).sum() > 20


# --------------------------------------------------------------------------------------------------
# Properties on random images


POINTS_64 = _fpn_points(64, 64)


def _box_strategy(center_low, center_high, min_wh, max_wh):
    """XYXY boxes from a center and a width and height."""
    return st.tuples(
        st.floats(center_low, center_high),
        st.floats(center_low, center_high),
        st.floats(min_wh, max_wh),
        st.floats(min_wh, max_wh),
    ).map(lambda b: [b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2])


_boxes = st.lists(_box_strategy(-10.0, 74.0, 0.5, 150.0), min_size=0, max_size=6)
# Centers within a few stride-8 cells: several boxes often share a core-zone point, i.e. tie at y_s
# = 1.
_crowded_boxes = st.lists(_box_strategy(8.0, 40.0, 0.5, 120.0), min_size=1, max_size=6)


@HYPOTHESIS
@given(boxes=_boxes, gamma=st.sampled_from([0.0, 0.2, 0.4]), radius=st.sampled_from([0.0, 1.5]))
def test_scores_lie_in_unit_interval_and_negatives_are_background(boxes, gamma, radius):
    points, strides, ranges = POINTS_64
    boxes = torch.tensor(boxes).reshape(-1, 4).float()
    classes = torch.zeros(len(boxes), dtype=torch.long)
    scores, cls, targets = smooth_label_targets(
        points,
        strides,
        ranges,
        boxes,
        classes,
        NUM_CLASSES,
        relaxation=gamma,
        center_sampling_radius=radius,
    )
    assert ((scores >= 0) & (scores <= 1)).all()
    assert torch.equal(cls == NUM_CLASSES, scores == 0)
    assert torch.isfinite(targets).all()


@HYPOTHESIS
@given(boxes=_boxes, radius=st.sampled_from([0.0, 1.0]))
def test_positive_points_lie_strictly_inside_their_box(boxes, radius):
    points, strides, ranges = POINTS_64
    boxes = torch.tensor(boxes).reshape(-1, 4).float()
    classes = torch.zeros(len(boxes), dtype=torch.long)
    scores, _, targets = smooth_label_targets(
        points, strides, ranges, boxes, classes, NUM_CLASSES, center_sampling_radius=radius
    )
    assert (targets[scores > 0] > 0).all()


@HYPOTHESIS
@given(
    boxes=_crowded_boxes,
    classes=st.lists(st.integers(0, NUM_CLASSES - 1), min_size=6, max_size=6),
    data=st.data(),
)
def test_permuting_boxes_does_not_change_the_assignment(boxes, classes, data):
    boxes = torch.tensor(boxes).reshape(-1, 4).float()
    classes = torch.tensor(classes[: len(boxes)], dtype=torch.long)
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).tolist()
    # Ties in y_s go to the smaller box; only among equal areas does the order matter (lower index
    # wins).
    assume(len(set(areas)) == len(areas))
    perm = torch.tensor(data.draw(st.permutations(range(len(boxes)))), dtype=torch.long)
    points, strides, ranges = POINTS_64
    expected = smooth_label_targets(points, strides, ranges, boxes, classes, NUM_CLASSES)
    permuted = smooth_label_targets(
        points, strides, ranges, boxes[perm], classes[perm], NUM_CLASSES
    )
    pos = expected[0] > 0
    assert torch.equal(expected[0], permuted[0])
    assert torch.equal(expected[1], permuted[1])
    assert torch.equal(expected[2][pos], permuted[2][pos])


# Coordinates on a half-pixel grid keep every difference exact in float32, so shifting is exact too.
_grid_boxes = st.lists(
    st.tuples(
        st.integers(-40, 160), st.integers(-40, 160), st.integers(1, 300), st.integers(1, 300)
    ).map(lambda b: [b[0] / 2, b[1] / 2, (b[0] + b[2]) / 2, (b[1] + b[3]) / 2]),
    min_size=0,
    max_size=6,
)


@HYPOTHESIS
@given(
    boxes=_grid_boxes,
    k=st.integers(-4, 8),
    ky=st.integers(-4, 8),
    radius=st.sampled_from([0.0, 1.5]),
)
def test_shifting_points_and_boxes_by_a_multiple_of_every_stride_changes_nothing(
    boxes, k, ky, radius
):
    points, strides, ranges = POINTS_64
    boxes = torch.tensor(boxes).reshape(-1, 4).float()
    classes = torch.arange(len(boxes)) % NUM_CLASSES
    shift = torch.tensor([128.0 * k, 128.0 * ky])
    kwargs = dict(num_classes=NUM_CLASSES, center_sampling_radius=radius)
    expected = smooth_label_targets(points, strides, ranges, boxes, classes, **kwargs)
    shifted = smooth_label_targets(
        points + shift, strides, ranges, boxes + shift.repeat(2), classes, **kwargs
    )
    pos = expected[0] > 0
    assert torch.equal(expected[0], shifted[0])
    assert torch.equal(expected[1], shifted[1])
    assert torch.equal(expected[2][pos], shifted[2][pos])


# --------------------------------------------------------------------------------------------------
# Devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("max_pairs", [1 << 21, 4096])
def test_cuda_assignment_matches_cpu(monkeypatch, max_pairs):
    monkeypatch.setattr(la, "MAX_PAIRS_PER_CHUNK", max_pairs)
    points, strides, ranges = _fpn_points(192, 192, offset=0.0)
    boxes, classes = _crowded_image(3)
    for radius in (0.0, 1.5):
        inputs = (points, strides, ranges, boxes, classes)
        cpu = smooth_label_targets(*inputs, NUM_CLASSES, center_sampling_radius=radius)
        gpu = smooth_label_targets(
            *(t.cuda() for t in inputs), NUM_CLASSES, center_sampling_radius=radius
        )
        assert all(t.device.type == "cuda" for t in gpu)
        assert torch.allclose(cpu[0], gpu[0].cpu(), atol=1e-6)
        assert torch.equal(cpu[1], gpu[1].cpu())
        pos = cpu[0] > 0
        assert torch.allclose(cpu[2][pos], gpu[2].cpu()[pos], atol=1e-4)


# --------------------------------------------------------------------------------------------------
# Dynamic label


def test_dynamic_label_couples_static_label_with_iou():
    # y_d = y_s * q: 0.5 * 0.6 = 0.3, 1 * 0.25 = 0.25, 0.8 * 0 = 0.
    y_s = torch.tensor([0.5, 1.0, 0.8])
    q = torch.tensor([0.6, 0.25, 0.0])
    expected = torch.tensor([0.3, 0.25, 0.0])
    assert torch.allclose(dynamic_smooth_labels(y_s, q), expected)
    assert torch.allclose(
        dynamic_smooth_labels(y_s, q, iou_coupling=True, iou_only=False), expected
    )


def test_dynamic_label_without_coupling_is_the_static_label():
    y_s = torch.tensor([0.5, 1.0, 0.8])
    q = torch.tensor([0.6, 0.25, 0.0])
    assert torch.equal(dynamic_smooth_labels(y_s, q, iou_coupling=False), y_s)


@pytest.mark.parametrize("iou_coupling", [True, False])
def test_dynamic_label_iou_only_is_the_iou(iou_coupling):
    y_s = torch.tensor([0.5, 1.0, 0.8])
    q = torch.tensor([0.6, 0.25, 0.0])
    assert torch.equal(dynamic_smooth_labels(y_s, q, iou_coupling=iou_coupling, iou_only=True), q)


def test_dynamic_label_is_exported_from_the_package():
    assert dsla.dynamic_smooth_labels is dynamic_smooth_labels
    assert dsla.smooth_label_targets is smooth_label_targets
