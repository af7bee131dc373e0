"""The DSLA losses (docs/method.md, "Losses"): Quality Focal Loss, IoU / GIoU losses on (l, t, r,
b), the all-reduce mean."""

import math

import pytest
import torch

import dsla
from dsla.losses import all_reduce_mean, box_regression_loss, paired_iou, quality_focal_loss


def _qfl_reference(x, t, beta):
    """BCE written with log-sigmoid, -(t log s(x) + (1 - t) log s(-x)), times |t - s(x)| ** beta."""
    log_p = torch.nn.functional.logsigmoid(x)
    log_not_p = torch.nn.functional.logsigmoid(-x)
    return -(t * log_p + (1 - t) * log_not_p) * (t - torch.exp(log_p)).abs() ** beta


# --------------------------------------------------------------------------------------------------
# Quality Focal Loss


def test_quality_focal_loss_hand_computed_values():
    # x = 0: sigmoid = 0.5 and BCE = log 2 for t = 0 and t = 1 (and t = 0.5: -(0.5 log .5 + 0.5 log
    # .5) = log 2).   t = 1 or 0 -> log 2 * 0.5 ** 2 = 0.25 log 2 = 0.173287...;  t = 0.5 -> |0.5 -
    # 0.5| ** 2 = 0 -> 0. x = log 3: sigmoid = 3/4; t = 0.25: BCE = -(0.25 log 0.75 + 0.75 log 0.25)
    # = 1.11164...;   |0.25 - 0.75| ** 2 = 0.25 -> 0.27791...
    logits = torch.tensor([0.0, 0.0, 0.0, math.log(3)])
    targets = torch.tensor([1.0, 0.0, 0.5, 0.25])
    bce_last = -(0.25 * math.log(0.75) + 0.75 * math.log(0.25))
    expected = torch.tensor([0.25 * math.log(2), 0.25 * math.log(2), 0.0, 0.25 * bce_last])
    assert torch.allclose(quality_focal_loss(logits, targets), expected, atol=1e-6)


def test_quality_focal_loss_is_zero_when_the_score_equals_the_soft_label():
    # sigmoid(logit(t)) = t -> the modulating factor |t - sigmoid(x)| ** beta is 0.
    t = torch.tensor([0.1, 0.37, 0.5, 0.9], dtype=torch.float64)
    x = torch.log(t / (1 - t))
    assert torch.allclose(quality_focal_loss(x, t), torch.zeros(4, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5])
def test_quality_focal_loss_matches_log_sigmoid_formula_elementwise_and_unreduced(beta):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 5, generator=gen, dtype=torch.float64) * 4
    targets = torch.rand(2, 7, 5, generator=gen, dtype=torch.float64)
    targets[0] = 0.0  # negatives
    loss = quality_focal_loss(logits, targets, beta=beta)
    assert loss.shape == logits.shape
    assert torch.allclose(loss, _qfl_reference(logits, targets, beta), rtol=1e-10, atol=1e-12)


def test_quality_focal_loss_with_beta_zero_is_plain_bce():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(30, generator=gen)
    targets = torch.rand(30, generator=gen)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    assert torch.allclose(quality_focal_loss(logits, targets, beta=0.0), bce)


def test_quality_focal_loss_on_negatives_is_the_focal_term():
    # t = 0: BCE = -log(1 - p), factor p ** beta: loss = -p ** 2 log(1 - p).
    # x = log 3 -> p = 3/4: -(9/16) log(1/4) = (9/16) log 4 = 0.779795...; x = -log 3 -> p = 1/4:
    # (1/16) log(4/3).
    logits = torch.tensor([math.log(3), -math.log(3)], dtype=torch.float64)
    loss = quality_focal_loss(logits, torch.zeros(2, dtype=torch.float64))
    expected = torch.tensor([9 / 16 * math.log(4), 1 / 16 * math.log(4 / 3)], dtype=torch.float64)
    assert torch.allclose(loss, expected, rtol=1e-12)


def test_quality_focal_loss_is_finite_for_saturated_logits():
    # x = +-100 against the opposite hard label: BCE = 100, factor |t - sigmoid(x)| ** 2 = 1 -> 100.
    logits = torch.tensor([100.0, -100.0], requires_grad=True)
    loss = quality_focal_loss(logits, torch.tensor([0.0, 1.0]))
    assert torch.allclose(loss, torch.tensor([100.0, 100.0]))
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_quality_focal_loss_gradient_passes_gradcheck():
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(4, 3, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    targets = torch.rand(4, 3, generator=gen, dtype=torch.float64)
    targets[0] = 0.0
    targets[1, 0] = 1.0
    assert torch.autograd.gradcheck(lambda x: quality_focal_loss(x, targets), (logits,))


@pytest.mark.parametrize("target_shape", [(4, 2), (3,), (4, 3, 1)])
def test_quality_focal_loss_rejects_targets_of_another_shape(target_shape):
    # Shapes that would broadcast silently must raise too.
    with pytest.raises(ValueError, match="shape"):
        quality_focal_loss(torch.zeros(4, 3), torch.zeros(target_shape))


def test_quality_focal_loss_is_exported_from_the_package():
    assert dsla.quality_focal_loss is quality_focal_loss


# --------------------------------------------------------------------------------------------------
# IoU and GIoU on (l, t, r, b)


def test_paired_iou_of_hand_computed_pairs():
    # Row 0: pred (1, 1, 1, 1) is 2 x 2 = 4, target (2, 2, 2, 2) is 4 x 4 = 16; the intersection is
    # the pred   (min per side) -> IoU = 4 / 16 = 0.25.
    # Row 1: pred (1, 2, 3, 4) is (1 + 3) x (2 + 4) = 24, target (2, 1, 1, 3) is 3 x 4 = 12;
    #   intersection min per side (1, 1, 1, 3) -> 2 x 4 = 8; union 24 + 12 - 8 = 28 -> IoU = 8 / 28
    # = 2/7. Row 2: identical boxes -> 1.
    pred = torch.tensor([[1.0, 1, 1, 1], [1, 2, 3, 4], [5, 6, 7, 8]])
    target = torch.tensor([[2.0, 2, 2, 2], [2, 1, 1, 3], [5, 6, 7, 8]])
    iou = paired_iou(pred, target)
    assert iou.shape == (3,)
    assert torch.allclose(iou, torch.tensor([0.25, 2 / 7, 1.0]))
    assert torch.allclose(paired_iou(target, pred), iou)


def test_paired_iou_is_unchanged_when_both_are_scaled_by_a_stride():
    gen = torch.Generator().manual_seed(3)
    pred = torch.rand(50, 4, generator=gen, dtype=torch.float64) * 10
    target = torch.rand(50, 4, generator=gen, dtype=torch.float64) * 10
    for stride in (8, 128):
        assert torch.allclose(
            paired_iou(pred * stride, target * stride), paired_iou(pred, target), rtol=1e-12
        )
        for loss_type in ("iou", "giou"):
            assert torch.allclose(
                box_regression_loss(pred * stride, target * stride, loss_type),
                box_regression_loss(pred, target, loss_type),
                rtol=1e-9,
            )


def test_iou_loss_is_minus_log_iou():
    # IoUs 0.25 and 2/7 from the hand-computed pairs above: -log 0.25 = log 4, -log(2/7) = log 3.5;
    # identical -> 0.
    pred = torch.tensor([[1.0, 1, 1, 1], [1, 2, 3, 4], [5, 6, 7, 8]])
    target = torch.tensor([[2.0, 2, 2, 2], [2, 1, 1, 3], [5, 6, 7, 8]])
    loss = box_regression_loss(pred, target, "iou")
    assert loss.shape == (3,)
    assert torch.allclose(loss, torch.tensor([math.log(4), math.log(3.5), 0.0]), atol=1e-6)


def test_iou_loss_of_disjoint_or_empty_boxes_is_clamped_at_iou_1e_minus_6():
    # Row 0: pred (-2, 1, 4, 1) spans x in [2, 4], target (1, 1, 1, 1) spans x in [-1, 1]:
    # intersection width   min(-2, 1) + min(4, 1) = -1 -> clamped to 0 -> IoU 0 -> -log(1e-6) = 6
    # log 10 = 13.8155... Row 1: a zero-size prediction: IoU 0, same loss.
    pred = torch.tensor([[-2.0, 1, 4, 1], [0, 0, 0, 0]], requires_grad=True)
    target = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 1]])
    assert torch.equal(paired_iou(pred, target), torch.zeros(2))
    loss = box_regression_loss(pred, target, "iou")
    assert torch.allclose(loss, torch.full((2,), 6 * math.log(10)))
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all()


def test_giou_loss_is_one_minus_giou():
    # Row 0: pred (2, 1, 2, 1) -> box [-2, -1, 2, 1], area 8; target (1, 2, 1, 2) -> [-1, -2, 1, 2],
    # area 8;   intersection [-1, -1, 1, 1] = 4; union 12; IoU 1/3; enclosing [-2, -2, 2, 2] = 16;
    #   GIoU = 1/3 - (16 - 12) / 16 = 1/12 -> loss 11/12.
    # Row 1: pred (1, 1, 1, 1) -> [-1, -1, 1, 1] = 4; target (1, 1, 3, 1) -> [-1, -1, 3, 1] = 8;
    # inter 4, union 8,   enclosing 8 -> GIoU = 0.5 -> loss 0.5.
    # Row 2: disjoint: pred (-2, 1, 4, 1) -> [2, -1, 4, 1] = 4; target [-1, -1, 1, 1] = 4; inter 0;
    # union 8;   enclosing [-1, -1, 4, 1] = 10 -> GIoU = 0 - 2/10 = -0.2 -> loss 1.2.
    pred = torch.tensor([[2.0, 1, 2, 1], [1, 1, 1, 1], [-2, 1, 4, 1]])
    target = torch.tensor([[1.0, 2, 1, 2], [1, 1, 3, 1], [1, 1, 1, 1]])
    loss = box_regression_loss(pred, target, "giou")
    assert loss.shape == (3,)
    assert torch.allclose(loss, torch.tensor([11 / 12, 0.5, 1.2]), atol=1e-5)


def test_giou_loss_is_zero_for_identical_boxes_and_differs_from_iou_loss():
    pred = torch.tensor([[3.0, 4, 5, 6], [2, 1, 2, 1]])
    target = torch.tensor([[3.0, 4, 5, 6], [1, 2, 1, 2]])
    giou = box_regression_loss(pred, target, "giou")
    iou = box_regression_loss(pred, target, "iou")
    assert giou[0].abs() < 1e-6
    # Row 1: 1 - GIoU = 11/12 (above), -log(IoU) = log 3.
    assert torch.allclose(iou[1], torch.tensor(math.log(3)), atol=1e-6)
    assert torch.allclose(giou[1], torch.tensor(11 / 12), atol=1e-5)


@pytest.mark.parametrize("loss_type", ["smooth_l1", "IoU", ""])
def test_unknown_box_loss_type_raises(loss_type):
    with pytest.raises(ValueError, match="loss type"):
        box_regression_loss(torch.ones(2, 4), torch.ones(2, 4), loss_type)


# --------------------------------------------------------------------------------------------------
# Normalizer


def test_all_reduce_mean_returns_its_input_in_a_single_process():
    value = torch.tensor(3.5)
    assert torch.equal(all_reduce_mean(value), value)
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(all_reduce_mean(values), values)
