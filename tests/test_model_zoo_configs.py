"""Every config under configs/DSLA builds on the CPU, runs, and holds the recipe of its row of the paper."""
import glob
import os

import pytest
import torch

from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from conftest import REPO_ROOT, load_config
from dsla.solver import build_optimizer

CONFIGS = sorted(
    os.path.relpath(path, REPO_ROOT)
    for path in glob.glob(os.path.join(REPO_ROOT, "configs", "DSLA", "**", "*.yaml"), recursive=True)
)
# No pretrained weights, small test images, and every detection kept so that post-processing runs.
SMALL = ["MODEL.SWIN.PRETRAINED_WEIGHTS", "", "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 96]
SMALL += ["MODEL.DSLA.SCORE_THRESH_TEST", 0.0, "TEST.DETECTIONS_PER_IMAGE", 5]
RGB_MEAN, RGB_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def test_the_released_models_and_the_ablations_have_configs():
    names = {os.path.basename(c) for c in CONFIGS}
    assert {
        "dsla_R_50_FPN_1x.yaml",
        "dsla_R_101_DCN_FPN_ms_2x.yaml",
        "dsla_X_101_64x4d_DCN_FPN_ms_2x.yaml",
        "dsla_Swin_S_FPN_ms_3x.yaml",
    } <= names
    assert len([c for c in CONFIGS if "ablations" in c]) >= 9


@pytest.mark.parametrize("config", CONFIGS)
def test_config_builds_and_runs_inference_on_the_cpu(config):
    torch.manual_seed(0)
    cfg = load_config(config, SMALL)
    model = build_model(cfg).eval()
    with torch.no_grad():
        outputs = model([{"image": torch.rand(3, 64, 96) * 255, "height": 128, "width": 192}])
    instances = outputs[0]["instances"]
    # detector_postprocess drops the empty boxes of an untrained model, so there may be fewer than 5.
    assert instances.image_size == (128, 192) and len(instances) <= 5
    assert instances.has("scores") and instances.has("pred_classes")
    boxes = instances.pred_boxes.tensor
    assert (boxes[:, 0::2] <= 192).all() and (boxes[:, 1::2] <= 128).all() and (boxes >= 0).all()

    optimizer = build_optimizer(cfg, model)
    build_lr_scheduler(cfg, optimizer)
    assert all(step < cfg.SOLVER.MAX_ITER for step in cfg.SOLVER.STEPS)


@pytest.mark.parametrize(
    "config,opts",
    [
        ("configs/DSLA/dsla_R_101_DCN_FPN_ms_2x.yaml", ["MODEL.RESNETS.DEPTH", 50]),
        ("configs/DSLA/dsla_Swin_S_FPN_ms_3x.yaml", ["MODEL.SWIN.NAME", "swin_tiny_patch4_window7_224"]),
    ],
)
def test_big_model_recipes_train_a_step_with_gradients_on_their_deformable_and_swin_parts(config, opts):
    # Smaller members of the same families (R-50, Swin-T), same code paths.
    torch.manual_seed(0)
    cfg = load_config(config, SMALL + opts)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    instances = Instances((64, 96))
    instances.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 50.0, 60.0], [30.0, 10.0, 90.0, 40.0]]))
    instances.gt_classes = torch.tensor([1, 5])
    with EventStorage():
        losses = model([{"image": torch.rand(3, 64, 96) * 255, "instances": instances}])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    optimizer.step()
    head = model.proposal_generator.head
    assert head.cls_subnet[9].conv_offset.weight.grad.abs().sum() > 0
    assert head.bbox_subnet[9].conv_offset.weight.grad.abs().sum() > 0
    bottom_up = model.backbone.bottom_up
    if "R_101" in config:
        assert bottom_up.res5[2].conv2.conv_offset.weight.grad.abs().sum() > 0
        assert bottom_up.res3[0].conv1.norm.weight.grad.abs().sum() > 0
    else:
        assert bottom_up.layers[3].blocks[1].attn.relative_position_bias_table.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "config,depth,groups,width,deform_stages,base_lr",
    [
        ("configs/DSLA/dsla_R_101_DCN_FPN_ms_2x.yaml", 101, 1, 64, [False, True, True, True], 0.01),
        ("configs/DSLA/dsla_X_101_64x4d_DCN_FPN_ms_2x.yaml", 101, 64, 4, [False, False, True, True], 0.02),
    ],
)
def test_resnet_dcn_configs_hold_the_authors_recipe(config, depth, groups, width, deform_stages, base_lr):
    cfg = load_config(config)
    res = cfg.MODEL.RESNETS
    assert (res.DEPTH, res.NUM_GROUPS, res.WIDTH_PER_GROUP) == (depth, groups, width)
    assert res.DEFORM_ON_PER_STAGE == deform_stages and not res.DEFORM_MODULATED
    # Pytorch style: stride in the 3x3 conv, BN statistics frozen, RGB normalized by ImageNet mean and std.
    assert not res.STRIDE_IN_1X1 and res.NORM == "FrozenStatsBN" and cfg.MODEL.BACKBONE.FREEZE_AT == 2
    assert cfg.INPUT.FORMAT == "RGB" and cfg.MODEL.PIXEL_MEAN == RGB_MEAN and cfg.MODEL.PIXEL_STD == RGB_STD
    assert cfg.SOLVER.OPTIMIZER == "SGD" and cfg.SOLVER.BASE_LR == base_lr
    assert cfg.SOLVER.WEIGHT_DECAY == cfg.SOLVER.WEIGHT_DECAY_NORM == 1e-4 and cfg.SOLVER.WEIGHT_DECAY_BIAS == 0.0
    # 24 epochs, lr x0.1 at epochs 16 and 22, 7500 iterations per epoch at batch 16.
    assert cfg.SOLVER.IMS_PER_BATCH == 16
    assert cfg.SOLVER.MAX_ITER == 180000 and tuple(cfg.SOLVER.STEPS) == (120000, 165000)
    _assert_big_model_head_and_inputs(cfg)


def test_swin_config_holds_the_authors_recipe():
    cfg = load_config("configs/DSLA/dsla_Swin_S_FPN_ms_3x.yaml")
    assert cfg.MODEL.BACKBONE.NAME == "build_dsla_swin_fpn_backbone" and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert cfg.MODEL.SWIN.NAME == "swin_small_patch4_window7_224" and cfg.MODEL.SWIN.DROP_PATH_RATE == 0.2
    assert cfg.MODEL.SWIN.OUT_FEATURES == cfg.MODEL.FPN.IN_FEATURES == ["stage2", "stage3", "stage4"]
    assert cfg.INPUT.FORMAT == "RGB" and cfg.MODEL.PIXEL_MEAN == RGB_MEAN and cfg.MODEL.PIXEL_STD == RGB_STD
    solver = cfg.SOLVER
    assert (solver.OPTIMIZER, solver.BASE_LR, solver.WEIGHT_DECAY, solver.WEIGHT_DECAY_NORM) == ("ADAMW", 1e-4, 0.05, 0)
    assert solver.BIAS_LR_FACTOR == 1.0 and solver.WEIGHT_DECAY_BIAS is None
    assert (solver.WARMUP_METHOD, solver.WARMUP_ITERS) == ("linear", 1000)
    # 36 epochs, lr x0.1 at epochs 27 and 33.
    assert solver.MAX_ITER == 270000 and tuple(solver.STEPS) == (202500, 247500)
    _assert_big_model_head_and_inputs(cfg)


def _assert_big_model_head_and_inputs(cfg):
    dsla = cfg.MODEL.DSLA
    assert (dsla.CLS_LOSS_WEIGHT, dsla.BOX_LOSS_TYPE, dsla.BOX_LOSS_WEIGHT) == (1.0, "giou", 1.0)
    assert dsla.NORM_REG_TARGETS and dsla.DCN_ON_LAST_CONV and dsla.CONV_BIAS
    assert dsla.CENTER_SAMPLING_RADIUS == 1.5 and dsla.POINT_OFFSET == 0.0
    assert tuple(cfg.INPUT.MIN_SIZE_TRAIN) == (640, 800) and cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "choice"
    assert cfg.INPUT.MAX_SIZE_TRAIN == 1333 and cfg.INPUT.RANDOM_FLIP == "horizontal"


@pytest.mark.parametrize(
    "name,relaxation,core_zone,iou_coupling,iou_only",
    [
        ("fcos_labels", 0.0, False, False, False),
        ("relaxation_only", 0.2, False, False, False),
        ("core_zone_only", 0.0, True, False, False),
        ("iou_coupling_only", 0.0, False, True, False),
        ("iou_only", 0.0, False, False, True),
        ("relaxation_0.1", 0.1, True, True, False),
        ("relaxation_0.2", 0.2, True, True, False),
        ("relaxation_0.3", 0.3, True, True, False),
        ("relaxation_0.4", 0.4, True, True, False),
    ],
)
def test_ablations_change_only_the_label_assignment_of_the_r50_model(
    name, relaxation, core_zone, iou_coupling, iou_only
):
    cfg = load_config(f"configs/DSLA/ablations/dsla_R_50_FPN_1x_{name}.yaml")
    dsla = cfg.MODEL.DSLA
    flags = (dsla.INTERVAL_RELAXATION, dsla.CORE_ZONE, dsla.IOU_COUPLING, dsla.IOU_ONLY)
    assert flags == (relaxation, core_zone, iou_coupling, iou_only)
    reference = load_config("configs/DSLA/dsla_R_50_FPN_1x.yaml")
    for key in ("INTERVAL_RELAXATION", "CORE_ZONE", "IOU_COUPLING", "IOU_ONLY"):
        cfg.MODEL.DSLA[key] = reference.MODEL.DSLA[key]
    assert cfg == reference
