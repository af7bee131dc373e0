"""The DSLA head module as a proposal generator: point layout, losses on hand-made cases, inference
decoding, the config keys that reach it, the class-agnostic first stage, scripting."""

import math

import pytest
import torch
from torch import Tensor, nn

from detectron2.config import get_cfg
from detectron2.export import scripting_with_instances
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage
from detectron2.utils.testing import assert_instances_allclose, convert_scripted_instances

from dsla import add_dsla_config
from dsla.label_assignment import level_points
from dsla.layers import ModulatedDeformConv2d
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


def test_uniform_box_loss_weighting_counts_every_positive_once():
    # The hand-made case above with BOX_LOSS_WEIGHTING "uniform": p0 (y_s = 1, IoU 1) and p1
    # (y_s = 0.5, IoU 0.6) each weigh 1 and the sum is divided by their number, 2 (with "y_s":
    # 0.5 * -log 0.6 / 1.5). The classification loss does not change.
    points = [torch.tensor([[16.0, 16.0], [32.0, 16.0], [100.0, 100.0]])]
    gt = [_instances([[0, 0, 40, 32]], [1])]
    distances = [torch.tensor([[[16.0, 16, 24, 16], [16, 16, 8, 16], [4, 4, 4, 4]]])]
    logits = [torch.tensor([[[-1.0, 0.5], [0.2, -0.3], [-2.0, 1.0]]])]
    losses = {}
    for weighting in ("y_s", "uniform"):
        gen = _generator(box_loss_type="iou", box_loss_weighting=weighting)
        with EventStorage():
            losses[weighting] = gen.losses(logits, distances, *gen.label_points(points, gt))
    assert losses["uniform"]["loss_dsla_box"].item() == pytest.approx(
        (0.0 - math.log(0.6)) / 2, rel=1e-5
    )
    assert losses["y_s"]["loss_dsla_box"].item() == pytest.approx(
        0.5 * -math.log(0.6) / 1.5, rel=1e-5
    )
    assert losses["uniform"]["loss_dsla_cls"].item() == losses["y_s"]["loss_dsla_cls"].item()


def test_unknown_box_loss_weighting_is_refused_by_name():
    with pytest.raises(ValueError, match="BOX_LOSS_WEIGHTING 'centerness'"):
        _generator(box_loss_weighting="centerness")


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


def _hand_case(requires_grad=False):
    """
    The case of `test_losses_match_hand_computation_with_iou_coupling_and_normalizers`: box (0, 0,
    40, 32) of class 1 at stride 8; p0 = (16, 16) in its core zone (y_s = 1, predicted exactly),
    p1 = (32, 16) with y_s = 0.5 predicted at IoU 0.6, p2 = (100, 100) outside.
    """
    points = [torch.tensor([[16.0, 16.0], [32.0, 16.0], [100.0, 100.0]])]
    gt = [_instances([[0, 0, 40, 32]], [1])]
    logits = [torch.tensor([[[-1.0, 0.5], [0.2, -0.3], [-2.0, 1.0]]], requires_grad=requires_grad)]
    distances = [
        torch.tensor([[[16.0, 16, 24, 16], [16, 16, 8, 16], [4, 4, 4, 4]]], requires_grad=True)
    ]
    return points, gt, logits, distances


def test_classification_loss_sends_no_gradient_into_the_box_branch():
    # The IoU in y_d = y_s * IoU is a target: the classifier must not learn by moving boxes.
    points, gt, logits, distances = _hand_case(requires_grad=True)
    gen = _generator()
    with EventStorage():
        losses = gen.losses(logits, distances, *gen.label_points(points, gt))
    losses["loss_dsla_cls"].backward(retain_graph=True)
    assert distances[0].grad is None
    assert logits[0].grad.abs().sum() > 0
    logits[0].grad = None
    losses["loss_dsla_box"].backward()
    assert logits[0].grad is None
    assert distances[0].grad[0, 1].abs().sum() > 0  # p1, predicted at IoU 0.6


# --- Config keys: each MODEL.DSLA key reaches the module built from a config -------------------

INPUT_SHAPE = {f"p{i + 3}": ShapeSpec(channels=32, stride=2 ** (i + 3)) for i in range(5)}
# A value for every MODEL.DSLA key, unlike its default both in the config and in the constructors,
# so that a key that from_config does not pass on shows as the default.
NON_DEFAULT = {
    "NUM_CLASSES": 3,
    "IN_FEATURES": ["p4", "p5"],
    "FPN_STRIDES": [16, 32],
    "REGRESS_RANGES": [[0.0, 100.0], [100.0, 300.0]],
    "INTERVAL_RELAXATION": 0.3,
    "CORE_ZONE": False,
    "IOU_COUPLING": False,
    "IOU_ONLY": True,
    "CENTER_SAMPLING_RADIUS": 1.5,
    "POINT_OFFSET": 0.5,
    "NUM_CONVS": 2,
    "NORM": "",
    "CONV_BIAS": True,
    "DCN_ON_LAST_CONV": True,
    "NORM_REG_TARGETS": True,
    "PRIOR_PROB": 0.1,
    "QFL_BETA": 1.5,
    "CLS_LOSS_WEIGHT": 2.0,
    "BOX_LOSS_TYPE": "giou",
    "BOX_LOSS_WEIGHT": 1.5,
    "BOX_LOSS_WEIGHTING": "uniform",
    "SCORE_THRESH_TEST": 0.2,
    "TOPK_CANDIDATES_TEST": 7,
    "NMS_THRESH_TEST": 0.4,
}
# One level of stride 8 with an unbounded range, as the hand-made cases above.
ONE_LEVEL = {
    "NUM_CLASSES": 2,
    "IN_FEATURES": ["p3"],
    "FPN_STRIDES": [8],
    "REGRESS_RANGES": [[0.0, math.inf]],
}


def _cfg(**keys):
    cfg = get_cfg()
    add_dsla_config(cfg)
    for key, value in keys.items():
        setattr(cfg.MODEL.DSLA, key, value)
    return cfg


def _from_config(two_stage=False, **keys):
    return DSLAProposalGenerator(_cfg(**keys), INPUT_SHAPE, two_stage=two_stage)


def test_non_default_values_cover_every_model_dsla_key():
    assert set(NON_DEFAULT) == set(_cfg().MODEL.DSLA)


def test_every_model_dsla_key_reaches_the_generator_or_the_head():
    gen = _from_config(**NON_DEFAULT)
    head = gen.head
    convs = [m for m in head.cls_subnet if isinstance(m, (nn.Conv2d, ModulatedDeformConv2d))]
    observed = {
        "NUM_CLASSES": gen.num_classes,
        "IN_FEATURES": gen.in_features,
        "FPN_STRIDES": gen.strides,
        "REGRESS_RANGES": gen.regress_ranges.tolist(),
        "INTERVAL_RELAXATION": gen.interval_relaxation,
        "CORE_ZONE": gen.core_zone,
        "IOU_COUPLING": gen.iou_coupling,
        "IOU_ONLY": gen.iou_only,
        "CENTER_SAMPLING_RADIUS": gen.center_sampling_radius,
        "POINT_OFFSET": gen.point_offset,
        "NUM_CONVS": len(convs),
        "NORM": "GN" if any(isinstance(m, nn.GroupNorm) for m in head.modules()) else "",
        "CONV_BIAS": convs[0].bias is not None,
        "DCN_ON_LAST_CONV": isinstance(convs[-1], ModulatedDeformConv2d),
        "NORM_REG_TARGETS": head.norm_reg_targets,
        "PRIOR_PROB": round(head.cls_score.bias.sigmoid()[0].item(), 6),
        "QFL_BETA": gen.qfl_beta,
        "CLS_LOSS_WEIGHT": gen.cls_loss_weight,
        "BOX_LOSS_TYPE": gen.box_loss_type,
        "BOX_LOSS_WEIGHT": gen.box_loss_weight,
        "BOX_LOSS_WEIGHTING": gen.box_loss_weighting,
        "SCORE_THRESH_TEST": gen.score_thresh_test,
        "TOPK_CANDIDATES_TEST": gen.topk_candidates_test,
        "NMS_THRESH_TEST": gen.nms_thresh_test,
    }
    assert observed == NON_DEFAULT
    assert head.cls_score.out_channels == 3 and head.strides == [16, 32]


def test_detections_per_image_follow_the_role():
    cfg = _cfg()
    cfg.TEST.DETECTIONS_PER_IMAGE, cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 17, 230
    detector = DSLAProposalGenerator(cfg, INPUT_SHAPE, two_stage=False)
    first_stage = DSLAProposalGenerator(cfg, INPUT_SHAPE, two_stage=True)
    assert (detector.two_stage, detector.max_detections_per_image) == (False, 17)
    assert (first_stage.two_stage, first_stage.max_detections_per_image) == (True, 230)


def test_point_offset_from_the_config_moves_the_points():
    sizes = [(1, 2)] * 5
    assert _from_config().make_points(sizes)[0].tolist() == [[0, 0], [8, 0]]
    assert _from_config(POINT_OFFSET=0.5).make_points(sizes)[0].tolist() == [[4, 4], [12, 4]]


# y_s of p0, p1, p2 of the hand-made case, and the mean y_d over the positives:
# - defaults: y_d = y_s * IoU = 1 * 1 and 0.5 * 0.6;
# - no core zone: p0 (l, t, r, b = 16, 16, 24, 16) has ctr = sqrt(16/24);
# - center sampling at radius 0.75: positives strictly within 6 pixels of the center (20, 16), so
#   p1 at x = 32 is out;
# - range (0, 20) with gamma 0.5: p0 (m = 24) is on the shoulder up to 30, h = (30 - 24) / 10 =
#   0.6, where gamma 0.2 (shoulder up to 24) would give h = 0;
# - IoU coupling off: y_d = y_s; IoU only: y_d = IoU (1 and 0.6).
LABEL_KEYS = [
    ({}, [1.0, 0.5, 0.0], (1.0 + 0.3) / 2),
    ({"CORE_ZONE": False}, [math.sqrt(2 / 3), 0.5, 0.0], (math.sqrt(2 / 3) + 0.3) / 2),
    ({"CENTER_SAMPLING_RADIUS": 0.75}, [1.0, 0.0, 0.0], 1.0),
    ({"INTERVAL_RELAXATION": 0.5, "REGRESS_RANGES": [[0.0, 20.0]]}, [0.6, 0.0, 0.0], 0.6),
    ({"IOU_COUPLING": False}, [1.0, 0.5, 0.0], (1.0 + 0.5) / 2),
    ({"IOU_ONLY": True}, [1.0, 0.5, 0.0], (1.0 + 0.6) / 2),
]


@pytest.mark.parametrize(
    "keys,static,mean_y_d",
    LABEL_KEYS,
    ids=["defaults"] + [",".join(k) for k, _, _ in LABEL_KEYS[1:]],
)
def test_label_keys_from_the_config_change_the_labels_as_computed_by_hand(keys, static, mean_y_d):
    gen = _from_config(**{**ONE_LEVEL, **keys})
    points, gt, logits, distances = _hand_case()
    labels = gen.label_points(points, gt)
    with EventStorage() as storage:
        gen.losses(logits, distances, *labels)
        scalars = {k: v.latest() for k, v in storage.histories().items()}
    assert labels[0][0].tolist() == pytest.approx(static)
    assert scalars["dsla/mean_y_d"] == pytest.approx(mean_y_d)


def test_qfl_beta_and_loss_weights_from_the_config_reach_the_losses():
    points, gt, logits, distances = _hand_case()
    gen = _from_config(**ONE_LEVEL, QFL_BETA=1.0, CLS_LOSS_WEIGHT=3.0, BOX_LOSS_WEIGHT=0.5)
    with EventStorage():
        losses = gen.losses(logits, distances, *gen.label_points(points, gt))
    # As in the hand computation above, with |t - sigmoid(x)| to the power 1; normalizers 1.3 and
    # 1.5.
    targets = [[0.0, 1.0], [0.0, 0.3], [0.0, 0.0]]
    qfl = sum(
        _bce(x, t) * abs(t - 1 / (1 + math.exp(-x)))
        for row_x, row_t in zip(logits[0][0].tolist(), targets)
        for x, t in zip(row_x, row_t)
    )
    assert losses["loss_dsla_cls"].item() == pytest.approx(3.0 * qfl / 1.3, rel=1e-5)
    assert losses["loss_dsla_box"].item() == pytest.approx(0.5 * 0.5 * -math.log(0.6) / 1.5)


# --- The first stage of a two-stage detector learns from boxes alone, as detectron2's RPN -------


def test_first_stage_without_gt_classes_takes_every_box_as_class_0():
    points, gt, logits, distances = _hand_case()
    boxes_only = Instances(gt[0].image_size, gt_boxes=gt[0].gt_boxes)
    class_0 = Instances(gt[0].image_size, gt_boxes=gt[0].gt_boxes, gt_classes=torch.tensor([0]))
    gen = _generator(two_stage=True)
    static, classes, box_targets = gen.label_points(points, [boxes_only])
    expected = gen.label_points(points, [class_0])
    assert classes.tolist() == [[0, 0, 2]]
    for actual, wanted in zip((static, classes, box_targets), expected):
        torch.testing.assert_close(actual, wanted)


def test_first_stage_trains_from_ground_truth_without_gt_classes():
    head = DSLAHead(input_shape=[ShapeSpec(channels=32, stride=8)], num_classes=1, num_convs=1)
    gen = _generator(head=head, two_stage=True, num_classes=1).train()
    images = ImageList(torch.zeros(2, 3, 32, 32), [(32, 32), (24, 30)])
    gt = [
        Instances((32, 32), gt_boxes=Boxes(torch.tensor([[2.0, 2, 20, 20]]))),
        Instances((24, 30)),
    ]
    gt[1].gt_boxes = Boxes(torch.zeros(0, 4))
    with EventStorage():
        proposals, losses = gen(images, {"p3": torch.randn(2, 32, 4, 4)}, gt)
    assert len(proposals) == 2 and all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_dsla_box"] > 0


def test_detector_without_gt_classes_is_a_clear_error():
    points, gt, _, _ = _hand_case()
    boxes_only = Instances(gt[0].image_size, gt_boxes=gt[0].gt_boxes)
    with pytest.raises(ValueError, match="needs 'gt_classes'.*fields \\['gt_boxes'\\]"):
        _generator(two_stage=False).label_points(points, [boxes_only])


# --- Scripting, as detectron2 scripts its RPN -----------------------------------------------------

SCRIPTED_FIELDS = {
    True: {"proposal_boxes": Boxes, "objectness_logits": Tensor},
    False: {"pred_boxes": Boxes, "scores": Tensor, "pred_classes": Tensor},
}


@pytest.mark.parametrize("two_stage", [True, False], ids=["first_stage", "detector"])
def test_scripted_generator_gives_the_eager_results(two_stage):
    torch.manual_seed(0)
    shapes = [ShapeSpec(channels=32, stride=8), ShapeSpec(channels=32, stride=16)]
    gen = _generator(
        head=DSLAHead(input_shape=shapes, num_classes=2, num_convs=1),
        two_stage=two_stage,
        in_features=["p3", "p4"],
        strides=[8, 16],
        regress_ranges=[(0.0, 64.0), (64.0, math.inf)],
        score_thresh_test=0.0,
        max_detections_per_image=20,
    ).eval()
    scripted = scripting_with_instances(gen, SCRIPTED_FIELDS[two_stage])
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (50, 40)])
    features = {"p3": torch.randn(2, 32, 8, 8), "p4": torch.randn(2, 32, 4, 4)}
    with torch.no_grad():
        expected, _ = gen(images, features)
        actual, _ = scripted(images, features)
    assert [len(r) for r in expected] == [20, 20]
    for wanted, got in zip(expected, actual):
        assert_instances_allclose(wanted, convert_scripted_instances(got))


def test_scripting_without_detectron2s_instances_patch_is_a_clear_error():
    gen = _generator(head=DSLAHead(input_shape=[ShapeSpec(channels=32, stride=8)], num_classes=2))
    with pytest.raises(RuntimeError, match="scripting_with_instances.*tools/export_model.py"):
        torch.jit.script(gen.eval())
