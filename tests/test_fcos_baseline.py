import os

import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from dsla import add_dsla_config
from dsla.modeling import FCOSBaseline

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
