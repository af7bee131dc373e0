"""The registered DSLA meta-architecture, built from the YAML configs."""

import pytest
import torch
from torch import Tensor

from detectron2.export import scripting_with_instances
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from detectron2.utils.testing import assert_instances_allclose, convert_scripted_instances

from dsla.modeling import DSLA

from conftest import load_config

R50 = "configs/DSLA/dsla_R_50_FPN_1x.yaml"
QUICKSTART = "configs/DSLA/dsla_quickstart_shapes.yaml"


def _inputs(size=(96, 128)):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 12.0, 60.0, 80.0], [40.0, 5.0, 120.0, 90.0]]))
    inst.gt_classes = torch.tensor([3, 7])
    empty = inst[:0]
    return [
        {"image": torch.rand(3, *size) * 255, "instances": inst},
        {"image": torch.rand(3, *size) * 255, "instances": empty},
    ]


def test_config_loads_the_r50_recipe():
    cfg = load_config(R50)
    assert cfg.MODEL.META_ARCHITECTURE == "DSLA"
    assert cfg.MODEL.PROPOSAL_GENERATOR.NAME == "DSLA"
    assert cfg.MODEL.DSLA.CLS_LOSS_WEIGHT == 2.0
    assert cfg.MODEL.DSLA.BOX_LOSS_TYPE == "iou"
    assert cfg.MODEL.DSLA.REGRESS_RANGES[-1][1] == float("inf")
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 and cfg.MODEL.BACKBONE.FREEZE_AT == 2
    assert cfg.SOLVER.CLIP_GRADIENTS.ENABLED and cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE == 35.0
    assert cfg.SOLVER.WARMUP_METHOD == "constant" and cfg.SOLVER.WARMUP_FACTOR == pytest.approx(
        1 / 3
    )
    assert cfg.SOLVER.BIAS_LR_FACTOR == 2.0 and cfg.SOLVER.WEIGHT_DECAY_BIAS == 0.0
    assert cfg.SOLVER.WEIGHT_DECAY == cfg.SOLVER.WEIGHT_DECAY_NORM == 0.0001
    assert (
        tuple(cfg.SOLVER.STEPS) == (58640, 80630) and cfg.SOLVER.MAX_ITER == 87960
    )  # 7330 iterations per epoch


def test_training_step_gives_finite_losses_and_gradients():
    torch.manual_seed(0)
    model = build_model(load_config(R50))
    model.train()
    with EventStorage():
        losses = model(_inputs())
    assert set(losses) == {"loss_dsla_cls", "loss_dsla_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    head = model.proposal_generator.head
    assert head.cls_score.weight.grad.abs().sum() > 0
    assert head.bbox_pred.weight.grad.abs().sum() > 0
    assert model.backbone.fpn_output5.weight.grad.abs().sum() > 0
    # FREEZE_AT 2: stem and res2 are frozen.
    assert model.backbone.bottom_up.stem.conv1.weight.grad is None


def test_inference_returns_instances_in_the_original_image_size():
    model = build_model(
        load_config(R50, ["MODEL.DSLA.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "7"])
    )
    model.eval()
    with torch.no_grad():
        outputs = model([{"image": torch.rand(3, 96, 128) * 255, "height": 192, "width": 256}])
    inst = outputs[0]["instances"]
    assert inst.image_size == (192, 256)
    assert len(inst) == 7
    boxes = inst.pred_boxes.tensor
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 256).all() and (boxes[:, 3] <= 192).all()
    assert (inst.scores[:-1] >= inst.scores[1:]).all()
    assert inst.pred_classes.max() < 80


def test_p6_is_computed_from_the_p5_output():
    model = build_model(load_config(R50))
    top = model.backbone.top_block
    assert top.in_feature == "p5"
    assert top.p6.in_channels == 256


def test_a_subclass_of_the_dsla_detector_still_gets_detections_not_proposals():
    name = "DSLASubclassForTest"
    if name not in META_ARCH_REGISTRY:
        META_ARCH_REGISTRY.register(type(name, (DSLA,), {}))
    model = build_model(
        load_config(R50, ["MODEL.META_ARCHITECTURE", name, "MODEL.DSLA.SCORE_THRESH_TEST", "0.0"])
    )
    assert not model.proposal_generator.two_stage
    model.eval()
    with torch.no_grad():
        outputs = model([{"image": torch.rand(3, 96, 128) * 255}])
    assert outputs[0]["instances"].has("pred_classes")


TWO_STAGE = [
    "MODEL.META_ARCHITECTURE",
    "GeneralizedRCNN",
    "MODEL.ROI_HEADS.NAME",
    "StandardROIHeads",
    "MODEL.ROI_HEADS.IN_FEATURES",
    "['p3', 'p4', 'p5']",
    "MODEL.ROI_HEADS.NUM_CLASSES",
    "80",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "MODEL.ROI_BOX_HEAD.NAME",
    "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_FC",
    "1",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "64",
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION",
    "7",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "50",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "50",
    "MODEL.DSLA.SCORE_THRESH_TEST",
    "0.0",
]


def test_dsla_as_the_first_stage_of_a_two_stage_detector():
    model = build_model(load_config(R50, TWO_STAGE))
    assert model.proposal_generator.two_stage
    model.train()
    with EventStorage():
        losses = model(_inputs())
    assert {"loss_dsla_cls", "loss_dsla_box", "loss_cls", "loss_box_reg"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        outputs = model([{"image": torch.rand(3, 96, 128) * 255}])
    assert outputs[0]["instances"].has("pred_boxes")


def _quickstart_model(opts=()):
    torch.manual_seed(0)
    return build_model(load_config(QUICKSTART, ["MODEL.DSLA.SCORE_THRESH_TEST", "0.0", *opts]))


def test_each_image_of_a_batch_gets_the_detections_it_gets_alone_in_its_own_size():
    model = _quickstart_model().eval()
    generator = torch.Generator().manual_seed(1)
    inputs = [
        {"image": torch.rand(3, 96, 128, generator=generator) * 255, "height": 192, "width": 256},
        {"image": torch.rand(3, 96, 128, generator=generator) * 255},
    ]
    with torch.no_grad():
        batched = model(inputs)
        alone = [model([x])[0] for x in inputs]
    assert [r["instances"].image_size for r in batched] == [(192, 256), (96, 128)]
    for together, single in zip(batched, alone):
        # Most of the 100 kept: the untrained head's relu distances are 0 at some points, and
        # detectron2's detector_postprocess drops those empty boxes.
        assert len(together["instances"]) >= 50
        assert_instances_allclose(together["instances"], single["instances"])


# Scripted, as detectron2 scripts its RetinaNet and R-CNN models (tests/test_export_torchscript.py).
DETECTION_FIELDS = {"pred_boxes": Boxes, "scores": Tensor, "pred_classes": Tensor}
PROPOSAL_FIELDS = {"proposal_boxes": Boxes, "objectness_logits": Tensor}


def _scripting_inputs():
    generator = torch.Generator().manual_seed(1)
    return [
        {"image": torch.rand(3, 96, 128, generator=generator) * 255},
        {"image": torch.rand(3, 80, 100, generator=generator) * 255},
    ]


def test_scripted_detector_gives_the_eager_detections_in_the_network_input_size():
    model = _quickstart_model().eval()
    scripted = scripting_with_instances(model, DETECTION_FIELDS)
    inputs = _scripting_inputs()
    with torch.no_grad():
        expected = model(inputs)
        actual = scripted(inputs)
    for wanted, got, x in zip(expected, actual, inputs):
        got = detector_postprocess(convert_scripted_instances(got), *x["image"].shape[1:])
        assert len(got) > 0
        assert_instances_allclose(wanted["instances"], got)


def test_scripted_generalized_rcnn_with_dsla_first_stage_gives_the_eager_detections():
    opts = [
        *TWO_STAGE,
        "MODEL.ROI_HEADS.NUM_CLASSES",
        "4",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
    ]
    model = _quickstart_model(opts).eval()
    scripted = scripting_with_instances(model, {**PROPOSAL_FIELDS, **DETECTION_FIELDS})
    inputs = _scripting_inputs()
    with torch.no_grad():
        expected = model.inference(inputs, do_postprocess=False)
        actual = scripted.inference(inputs, do_postprocess=False)
    for wanted, got in zip(expected, actual):
        assert len(got) > 0
        assert_instances_allclose(wanted, got)
