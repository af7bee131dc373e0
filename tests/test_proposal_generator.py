"""The DSLA head module as a proposal generator: point layout, losses on hand-made cases, inference
decoding."""

import math

import pytest
import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage

from dsla.label_assignment import level_points
from dsla.modeling import DSLAHead, DSLAProposalGenerator


def _generator(**kwargs):
    args = dict(
        two_stage=False,
        head=nn.Identity(),
        in_features=["p3"],
        strides=[8],
        regress_ranges=[(0.0, math.inf)],
        num_classes=2,
        interval_relaxation=0.0,
        core_zone=True,
    )
    args.update(kwargs)
    return DSLAProposalGenerator(**args)


def _instances(boxes, classes, size=(64, 64)):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    return inst


def _bce(x, t):
    p = 1 / (1 + math.exp(-x))
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_level_points_are_row_major_with_offset():
    pts = level_points(2, 3, stride=8, offset=0.5)
    # index j * W + i holds ((i + 0.5) * 8, (j + 0.5) * 8)
    assert pts.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]


def test_losses_match_hand_computation_with_iou_coupling_and_normalizers():
    # Box g = (0, 0, 40, 32), class 1, center (20, 16), stride 8, one level with range (0, inf).
    # p0 = (16, 16): l, t, r, b = 16, 16, 24, 16; |16-20| = 4 <= s/2 and |16-16| = 0 -> core zone,
    # y_s = 1. p1 = (32, 16): l, t, r, b = 32, 16, 8, 16; ctr = sqrt(8/32 * 16/16) = 0.5, not core
    # (|32-20| = 12), y_s = 0.5. p2 = (100, 100): outside, negative.
    points = [torch.tensor([[16.0, 16.0], [32.0, 16.0], [100.0, 100.0]])]
    gt = [_instances([[0, 0, 40, 32]], [1])]
    # Predictions: p0 exact (IoU 1); p1 (16, 16, 8, 16) vs target (32, 16, 8, 16): both 32 high,
    # widths 24 and 40, intersection width 16 + 8 = 24 -> IoU = 24/40 = 0.6, y_d = 0.5 * 0.6 = 0.3.
    distances = [torch.tensor([[[16.0, 16, 24, 16], [16, 16, 8, 16], [4, 4, 4, 4]]])]
    logit_values = [[-1.0, 0.5], [0.2, -0.3], [-2.0, 1.0]]
    logits = [torch.tensor([logit_values])]
    gen = _generator(cls_loss_weight=2.0, box_loss_type="iou", box_loss_weight=1.5)
    with EventStorage() as storage:
        losses = gen.losses(logits, distances, *gen.label_points(points, gt))
        scalars = {k: v.latest() for k, v in storage.histories().items()}

    targets = [[0.0, 1.0], [0.0, 0.3], [0.0, 0.0]]
    qfl = sum(
        _bce(x, t) * abs(t - 1 / (1 + math.exp(-x))) ** 2
        for row_x, row_t in zip(logit_values, targets)
        for x, t in zip(row_x, row_t)
    )
    # Classification normalizer: sum(y_d) = 1.3; box normalizer: sum(y_s) = 1.5.
    expected_cls = 2.0 * qfl / 1.3
    expected_box = 1.5 * (1.0 * 0.0 + 0.5 * -math.log(0.6)) / 1.5
    assert losses["loss_dsla_cls"].item() == pytest.approx(expected_cls, rel=1e-5)
    assert losses["loss_dsla_box"].item() == pytest.approx(expected_box, rel=1e-5)
    assert scalars["dsla/num_pos_per_image"] == 2
    assert scalars["dsla/mean_y_s"] == pytest.approx(0.75)
    assert scalars["dsla/mean_y_d"] == pytest.approx(0.65)


def test_normalizer_is_clamped_at_one_and_iou_only_ablation():
    # One positive p1 (y_s = 0.5) predicted with IoU 0.6: with IOU_ONLY the target is q = 0.6 (not
    # 0.3), and both normalizers (0.6 and 0.5) are clamped to 1.
    points = [torch.tensor([[32.0, 16.0]])]
    gt = [_instances([[0, 0, 40, 32]], [0])]
    distances = [torch.tensor([[[16.0, 16, 8, 16]]])]
    logits = [torch.tensor([[[0.0, 0.0]]])]
    gen = _generator(iou_only=True, box_loss_type="giou")
    with EventStorage():
        losses = gen.losses(logits, distances, *gen.label_points(points, gt))
    expected_cls = _bce(0.0, 0.6) * abs(0.6 - 0.5) ** 2 + _bce(0.0, 0.0) * 0.5**2
    # GIoU: the enclosing box is the target box itself, so GIoU = IoU = 0.6.
    expected_box = 0.5 * (1 - 0.6)
    assert losses["loss_dsla_cls"].item() == pytest.approx(expected_cls, rel=1e-5)
    assert losses["loss_dsla_box"].item() == pytest.approx(expected_box, rel=1e-5)


def test_batch_without_boxes_gives_finite_losses_zero_box_loss_and_gradients():
    points = [level_points(4, 4, 8, 0.0)]
    logits = [torch.randn(2, 16, 2, requires_grad=True)]
    distances = [torch.rand(2, 16, 4, requires_grad=True)]
    gt = [
        _instances([], []),
        _instances([[5, 5, 5, 30], [10, 10, 10.5, 10]], [0, 1]),
    ]  # zero-area boxes
    with EventStorage():
        gen = _generator()
        losses = gen.losses(logits, distances, *gen.label_points(points, gt))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_dsla_box"].item() == 0.0
    sum(losses.values()).backward()
    assert distances[0].grad is not None and torch.isfinite(distances[0].grad).all()
    assert logits[0].grad.abs().sum() > 0


def test_inference_decodes_boxes_at_the_right_point_and_applies_threshold_nms_and_topk():
    head_input = [ShapeSpec(channels=32, stride=8)]
    gen = _generator(
        head=DSLAHead(input_shape=head_input, num_classes=2, num_convs=1),
        max_detections_per_image=2,
    )
    # Level of 3 rows x 4 columns; point (row 1, col 2) = (16, 8); class 1 scores 0.9 there.
    logits = torch.full((1, 12, 2), -10.0)
    logits[0, 1 * 4 + 2, 1] = math.log(0.9 / 0.1)
    logits[0, 0, 0] = 0.0  # score 0.5, at point (0, 0)
    logits[0, 1, 0] = -0.1  # score 0.475, overlapping the previous box of the same class
    distances = torch.full((1, 12, 4), 4.0)
    distances[0, 6] = torch.tensor([6.0, 3.0, 10.0, 20.0])
    points = [level_points(3, 4, 8, 0.0)]
    results = gen.inference(points, [logits], [distances], [(24, 30)])
    r = results[0]
    assert len(r) == 2
    # Highest score first: (16 - 6, 8 - 3, 16 + 10, 8 + 20) clipped to the 24 x 30 image -> y1 = 24.
    assert r.pred_boxes.tensor[0].tolist() == [10.0, 5.0, 26.0, 24.0]
    assert r.pred_classes.tolist() == [1, 0]
    assert r.scores[0].item() == pytest.approx(0.9)
    # The 0.475 box at (8, 0) overlaps the 0.5 box at (0, 0) with IoU 0 ((-4,-4,4,4) clipped vs
    # (4,-4,12,4)), so NMS keeps it, but max_detections_per_image = 2 drops it.
    assert r.scores[1].item() == pytest.approx(0.5)


def test_forward_in_two_stage_mode_returns_proposals_in_training():
    shapes = {"p3": ShapeSpec(channels=32, stride=8)}
    head = DSLAHead(input_shape=list(shapes.values()), num_classes=2, num_convs=1)
    gen = _generator(
        head=head, two_stage=True, score_thresh_test=0.0, max_detections_per_image=5
    ).train()
    images = ImageList(torch.zeros(1, 3, 32, 32), [(32, 32)])
    with EventStorage():
        proposals, losses = gen(
            images, {"p3": torch.randn(1, 32, 4, 4)}, [_instances([[2, 2, 20, 20]], [0])]
        )
    assert set(losses) == {"loss_dsla_cls", "loss_dsla_box"}
    assert len(proposals) == 1 and len(proposals[0]) == 5
    assert set(proposals[0].get_fields()) == {"proposal_boxes", "objectness_logits"}


def test_mismatched_strides_and_features_are_rejected():
    with pytest.raises(ValueError, match="one stride and one regress range"):
        _generator(strides=[8, 16])
    with pytest.raises(ValueError, match="box loss type"):
        _generator(box_loss_type="smooth_l1")
