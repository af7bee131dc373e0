import os

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.fcos import FCOS
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from dsla import add_dsla_config
from dsla.modeling import FCOSBaseline

from conftest import load_config

CONFIG = os.path.join(
    os.path.dirname(__file__), "..", "configs", "FCOS-Baseline", "fcos_R_50_FPN_1x.yaml"
)


def fcos_cfg(*opts):
    cfg = get_cfg()
    add_dsla_config(cfg)
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", *opts])
    return cfg


def inputs(with_instances):
    torch.manual_seed(0)
    instances = Instances((128, 160))
    instances.gt_boxes = Boxes(torch.tensor([[10.0, 20.0, 70.0, 90.0], [80.0, 30.0, 150.0, 120.0]]))
    instances.gt_classes = torch.tensor([3, 7])
    item = {
        "image": torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8),
        "height": 128,
        "width": 160,
    }
    if with_instances:
        item["instances"] = instances
    return [item]


def test_builds_detectron2_fcos_from_the_yaml_config():
    model = build_model(fcos_cfg())
    assert isinstance(model, FCOSBaseline)
    assert model.head_in_features == ["p3", "p4", "p5", "p6", "p7"]
    assert [model.backbone.output_shape()[f].stride for f in model.head_in_features] == [
        8,
        16,
        32,
        64,
        128,
    ]
    assert model.head.cls_score.out_channels == 80
    # detectron2's initialization by default.
    assert torch.all(model.head.bbox_pred.bias == 0)


def test_one_training_step_gives_finite_losses():
    torch.manual_seed(0)
    model = build_model(fcos_cfg())
    model.train()
    with EventStorage():
        losses = model(inputs(with_instances=True))
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_inference_with_box_bias_init_returns_boxes_about_one_stride_from_each_point():
    torch.manual_seed(0)
    model = build_model(
        fcos_cfg("MODEL.FCOS.BBOX_REG_INIT_BIAS", "1.0", "MODEL.FCOS.SCORE_THRESH_TEST", "0.0")
    )
    assert torch.all(model.head.bbox_pred.bias == 1.0)
    model.eval()
    with torch.no_grad():
        (output,) = model(inputs(with_instances=False))
    instances = output["instances"]
    assert instances.image_size == (128, 160)
    assert 0 < len(instances) <= 100
    assert {"pred_boxes", "scores", "pred_classes"} <= set(instances.get_fields())
    # Initial distances are about one stride (8 px and up); points on the border lose one side to
    # clipping.
    widths = instances.pred_boxes.tensor[:, 2] - instances.pred_boxes.tensor[:, 0]
    heights = instances.pred_boxes.tensor[:, 3] - instances.pred_boxes.tensor[:, 1]
    assert widths.min() > 6 and heights.min() > 6


def _random_boxes(num, size, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num, 2, generator=g) * torch.tensor(size[::-1]) * 0.8
    wh = 4 + torch.rand(num, 2, generator=g) * torch.tensor(size[::-1]) * 0.6
    return Boxes(torch.cat([xy, xy + wh], dim=1))


def test_default_ranges_match_detectron2s_own_matching():
    model = build_model(fcos_cfg())
    features = [torch.zeros(1, 1, -(-320 // s), -(-448 // s)) for s in (8, 16, 32, 64, 128)]
    anchors = model.anchor_generator(features)
    for seed in range(3):
        gt = _random_boxes(40, (320, 448), seed)
        ours = model.match_anchors(gt, anchors)
        detectron2s = FCOS._match_anchors(model, gt, anchors)
        assert ours.shape == detectron2s.shape and torch.equal(ours, detectron2s)
        assert (ours > 0).sum() > 0


def test_configured_ranges_move_a_box_to_the_level_they_name():
    # A 60-pixel box: by detectron2's ranges (P3 up to 64) it is learned on P3; with COCO's ranges
    # halved (P3 up to 32, P4 32-64) on P4 only.
    gt = Boxes(torch.tensor([[100.0, 100.0, 160.0, 160.0]]))
    levels = {}
    for name, opts in {
        "default": [],
        "halved": [
            "MODEL.FCOS.REGRESS_RANGES",
            "[[0, 32], [32, 64], [64, 128], [128, 256], [256, 1e8]]",
        ],
    }.items():
        model = build_model(fcos_cfg(*opts))
        features = [torch.zeros(1, 1, 256 // s, 256 // s) for s in (8, 16, 32, 64, 128)]
        anchors = model.anchor_generator(features)
        matched = model.match_anchors(gt, anchors)[0] > 0
        sizes = torch.tensor([len(a) for a in anchors])
        level = torch.repeat_interleave(torch.arange(5), sizes)
        levels[name] = sorted(set(level[matched].tolist()))
    assert levels == {"default": [0], "halved": [1]}


def test_point_offset_and_range_count_reach_the_model():
    model = build_model(fcos_cfg("MODEL.FCOS.POINT_OFFSET", 0.0))
    anchors = model.anchor_generator([torch.zeros(1, 1, 2, 2)] * 5)
    assert anchors[0].get_centers()[0].tolist() == [0.0, 0.0]
    assert build_model(fcos_cfg()).anchor_generator.offset == 0.5
    with pytest.raises(ValueError, match="one regress range per level"):
        build_model(fcos_cfg("MODEL.FCOS.REGRESS_RANGES", "[[0, 64], [64, 1e8]]"))


def test_the_retinanet_baseline_trains_on_the_quick_start_backbone(shapes_root):
    cfg = load_config(
        "configs/RetinaNet-Baseline/retinanet_quickstart_shapes.yaml",
        ["SOLVER.IMS_PER_BATCH", "2"],
    )
    model = build_model(cfg)
    assert type(model).__name__ == "RetinaNet"
    assert model.head_in_features == ["p3", "p4", "p5", "p6", "p7"]
    assert model.backbone.output_shape()["p3"].channels == 64
    # Anchors of COCO's sizes halved, 9 per point: the smallest 16 px on P3.
    anchors = list(model.anchor_generator.cell_anchors)[0]
    widths = anchors[:, 2] - anchors[:, 0]
    assert anchors.shape == (9, 4) and torch.isclose(widths, torch.tensor(16.0)).any()
    batch = inputs(with_instances=True)
    batch[0]["instances"].gt_classes = torch.tensor([0, 3])
    model.train()
    with EventStorage():
        losses = model(batch * 2)
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
