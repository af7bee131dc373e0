"""
Messy data through the real data path (DSLADatasetMapper, detectron2's loader, the quick-start
model): each case either trains with finite losses and gradients or stops with a ValueError that
names the image and annotation. A non-finite loss stops training with detectron2's
FloatingPointError and the iteration.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.events import EventStorage, get_event_storage

from dsla import engine
from dsla.data import DSLADatasetMapper
from dsla.modeling import DSLAProposalGenerator

from conftest import REPO_ROOT, load_config, short_training_opts

QUICKSTART = "configs/DSLA/dsla_quickstart_shapes.yaml"
FCOS_CONFIG = "configs/FCOS-Baseline/fcos_R_50_FPN_1x.yaml"
NUM_CLASSES = 4  # of the quick-start config


def _cfg(opts=()):
    return load_config(QUICKSTART, ["INPUT.RANDOM_FLIP", "none", *opts])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(_cfg()).train()


def _record(tmp_path, boxes, classes=None, size=(160, 160), image_id=7, mode=BoxMode.XYWH_ABS):
    """A dataset dict of a noise image of ``size`` (h, w) written under tmp_path, with one
    annotation per box."""
    height, width = size
    path = tmp_path / f"image_{image_id}.png"
    rng = np.random.default_rng(image_id)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    classes = classes if classes is not None else [i % NUM_CLASSES for i in range(len(boxes))]
    annotations = [
        {"bbox": list(map(float, box)), "bbox_mode": mode, "category_id": c, "iscrowd": 0}
        for box, c in zip(boxes, classes)
    ]
    return {
        "file_name": str(path),
        "image_id": image_id,
        "height": height,
        "width": width,
        "annotations": annotations,
    }


def _train_step(model, batch):
    """Losses of one training forward and backward; checks that losses and gradients are finite."""
    model.zero_grad()
    with EventStorage() as storage:
        losses = model(batch)
        scalars = {k: v.latest() for k, v in storage.histories().items()}
    total = sum(losses.values())
    assert torch.isfinite(total), losses
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    return {k: v.item() for k, v in losses.items()}, scalars


@pytest.mark.parametrize("box", [[10, 10, -5, 20], [10, 10, 20, -0.5], [-3, -3, -1, -1]])
def test_negative_box_size_stops_with_the_image_and_annotation(tmp_path, box):
    # The resize takes the min/max of the box corners, so without the check such a box is silently
    # mirrored into a valid one.
    record = _record(tmp_path, [[20, 20, 30, 30], box])
    with pytest.raises(ValueError) as err:
        DSLADatasetMapper(_cfg(), is_train=True)(record)
    message = str(err.value)
    assert (
        "image_7.png (image_id 7): annotation 1" in message
        and "negative width or height" in message
    )


def test_negative_size_is_also_caught_for_xyxy_boxes(tmp_path):
    record = _record(tmp_path, [[40, 20, 30, 50]], mode=BoxMode.XYXY_ABS)
    with pytest.raises(
        ValueError, match=r"annotation 0 has a box of negative width or height .* \(XYXY_ABS\)"
    ):
        DSLADatasetMapper(_cfg(), is_train=True)(record)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("coordinate", [0, 3])
def test_non_finite_coordinates_stop_with_the_image_and_annotation(tmp_path, bad, coordinate):
    box = [20.0, 20.0, 30.0, 30.0]
    box[coordinate] = bad
    record = _record(tmp_path, [box, [1, 1, 5, 5]])
    with pytest.raises(
        ValueError, match=r"image_7.png \(image_id 7\): annotation 0 has a non-finite box"
    ):
        DSLADatasetMapper(_cfg(), is_train=True)(record)


@pytest.mark.parametrize("class_id", [-1, NUM_CLASSES, 80])
def test_class_id_outside_the_model_classes_stops_with_image_annotation_and_class(
    tmp_path, class_id
):
    record = _record(tmp_path, [[20, 20, 30, 30], [50, 50, 30, 30]], classes=[0, class_id])
    with pytest.raises(ValueError) as err:
        DSLADatasetMapper(_cfg(), is_train=True)(record)
    message = str(err.value)
    assert "image_7.png (image_id 7): annotation 1" in message
    assert f"class id {class_id}, outside [0, {NUM_CLASSES})" in message


def test_mapper_takes_the_class_count_of_the_meta_architecture():
    assert DSLADatasetMapper(_cfg(["MODEL.DSLA.NUM_CLASSES", "9"]), is_train=True).num_classes == 9
    fcos = load_config(FCOS_CONFIG, ["MODEL.FCOS.NUM_CLASSES", "5"])
    assert DSLADatasetMapper(fcos, is_train=True).num_classes == 5


def test_zero_size_boxes_are_dropped_and_the_rest_trains(tmp_path, model):
    valid = [40, 40, 60, 50]
    record = _record(tmp_path, [[10, 10, 0, 20], valid, [80, 80, 20, 0], [5, 5, 0, 0]])
    out = DSLADatasetMapper(_cfg(), is_train=True)(record)
    assert out["instances"].gt_boxes.tensor.tolist() == [[40, 40, 100, 90]]
    losses, scalars = _train_step(model, [out])
    assert losses["loss_dsla_box"] > 0 and scalars["dsla/num_pos_per_image"] > 0


def test_boxes_partly_outside_are_clipped_and_wholly_outside_are_dropped(tmp_path, model):
    boxes = [
        [-20, -10, 60, 50],
        [120, 130, 100, 100],
        [170, 10, 30, 30],
        [-80, -80, 40, 40],
        [30, 200, 10, 10],
    ]
    out = DSLADatasetMapper(_cfg(), is_train=True)(_record(tmp_path, boxes))
    assert out["instances"].gt_boxes.tensor.tolist() == [[0, 0, 40, 40], [120, 130, 160, 160]]
    losses, _ = _train_step(model, [out])
    assert losses["loss_dsla_box"] > 0


def test_images_smaller_than_the_largest_stride_train_and_infer(tmp_path, model):
    # 20x24 pixels against strides up to 128. Two images per batch: the quick-start backbone uses
    # BatchNorm, which cannot train on a single 1x1 feature map (torch refuses one value per
    # channel).
    cfg = _cfg(
        [
            "INPUT.MIN_SIZE_TRAIN",
            "(20,)",
            "INPUT.MAX_SIZE_TRAIN",
            "24",
            "INPUT.MIN_SIZE_TEST",
            "20",
            "INPUT.MAX_SIZE_TEST",
            "24",
        ]
    )
    records = [
        _record(tmp_path, [[2, 3, 13, 15]], size=(20, 24), image_id=1),
        _record(tmp_path, [[0, 0, 24, 20]], size=(20, 24), image_id=2),
    ]
    batch = [DSLADatasetMapper(cfg, is_train=True)(r) for r in records]
    assert batch[0]["image"].shape == (3, 20, 24)
    _train_step(model, batch)

    model.eval()
    try:
        with torch.no_grad():
            result = model([DSLADatasetMapper(cfg, is_train=False)(records[0])])[0]["instances"]
    finally:
        model.train()
    assert result.image_size == (20, 24)
    assert torch.isfinite(result.pred_boxes.tensor).all()


@pytest.mark.parametrize("box_loss", ["giou", "iou"])
def test_one_pixel_and_sub_pixel_wide_boxes_get_positives_and_finite_losses(tmp_path, box_loss):
    # 0.2 px wide around x = 16 (a column of stride-16 points) and 1 px wide around x = 32 (stride
    # 32), with the points at multiples of the stride (offset 0).
    boxes = [[15.9, 40, 0.2, 50], [31.5, 20, 1.0, 100]]
    torch.manual_seed(0)
    model = build_model(
        _cfg(["MODEL.DSLA.BOX_LOSS_TYPE", box_loss, "MODEL.DSLA.POINT_OFFSET", "0.0"])
    ).train()
    out = DSLADatasetMapper(_cfg(), is_train=True)(_record(tmp_path, boxes))
    assert len(out["instances"]) == 2
    losses, scalars = _train_step(model, [out])
    assert scalars["dsla/num_pos_per_image"] >= 2
    assert losses["loss_dsla_box"] > 0


def test_crowded_image_with_2600_boxes_trains_with_finite_losses(tmp_path, model):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 150, (2600, 2))
    wh = rng.uniform(2, 40, (2600, 2))
    out = DSLADatasetMapper(_cfg(), is_train=True)(
        _record(tmp_path, np.concatenate([xy, wh], axis=1).tolist())
    )
    assert len(out["instances"]) == 2600
    losses, scalars = _train_step(model, [out])
    assert losses["loss_dsla_box"] > 0 and scalars["dsla/num_pos_per_image"] > 100


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import math
    import torch
    from dsla import smooth_label_targets
    from dsla.label_assignment import level_points

    def status_mb(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key))

    height, width = 800, 1333
    strides = [8, 16, 32, 64, 128]
    ranges = [(0, 64), (64, 128), (128, 256), (256, 512), (512, math.inf)]
    levels = [level_points(math.ceil(height / s), math.ceil(width / s), s, 0.0) for s in strides]
    points = torch.cat(levels)
    point_strides = torch.cat([torch.full((len(p),), float(s)) for p, s in zip(levels, strides)])
    point_ranges = torch.cat([torch.tensor(r).expand(len(p), 2) for p, r in zip(levels, ranges)])
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(3000, 2, generator=g) * torch.tensor([width - 40.0, height - 40.0])
    boxes = torch.cat([xy, xy + 2 + torch.rand(3000, 2, generator=g) * 200], dim=1)
    classes = torch.randint(0, 80, (3000,), generator=g)
    smooth_label_targets(points, point_strides, point_ranges, boxes[:2], classes[:2], 80)  # warm-up

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (the peak resident set) to the current resident set
    before = status_mb("VmRSS")
    scores, _, _ = smooth_label_targets(points, point_strides, point_ranges, boxes, classes, 80)
    assert (scores > 0).sum() > 1000
    print(len(points), status_mb("VmHWM") - before)
    """
)


@pytest.mark.skipif(
    not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc/self/clear_refs"
)
def test_label_assignment_memory_for_3000_boxes_at_coco_size_stays_bounded():
    # Unchunked, 22k points x 3000 boxes would need several GB of [P, N, 4] temporaries.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    num_points, extra_mb = proc.stdout.split()
    assert int(num_points) > 22000
    assert float(extra_mb) < 400, f"peak extra memory {float(extra_mb):.0f} MB"


def test_batch_where_no_image_has_a_box_trains_with_zero_box_loss(tmp_path, model):
    records = [
        _record(tmp_path, [], image_id=1),
        _record(
            tmp_path, [[200, 200, 10, 10], [0, 0, 0, 10]], image_id=2
        ),  # every box dropped by the mapper
    ]
    batch = [DSLADatasetMapper(_cfg(), is_train=True)(r) for r in records]
    assert [len(x["instances"]) for x in batch] == [0, 0]
    losses, scalars = _train_step(model, batch)
    assert losses["loss_dsla_box"] == 0 and losses["loss_dsla_cls"] > 0
    assert scalars["dsla/num_pos_per_image"] == 0
    # DDP needs a gradient for every parameter, also when the batch has nothing to regress.
    assert all(p.grad is not None for p in model.proposal_generator.head.parameters())


@pytest.fixture
def grayscale_and_exif_dataset(tmp_path):
    """
    Two images: a grayscale PNG of 64x48 (w x h), and a JPEG stored as 64x48 with EXIF orientation 6
    (rotate 90 degrees clockwise to display), i.e. 48x64 as displayed. Annotations are in displayed
    coordinates.
    """
    gray = np.full((48, 64), 90, dtype=np.uint8)
    gray[10:30, 20:50] = 200
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")

    stored = np.zeros((48, 64, 3), dtype=np.uint8)
    stored[:12, :16] = (
        255,
        0,
        0,
    )  # stored top-left -> displayed top-right: x in [36, 48), y in [0, 16)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", quality=95, exif=exif.tobytes())

    def anno(box):
        return {"bbox": box, "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1, "iscrowd": 0}

    records = [
        {
            "file_name": str(tmp_path / "gray.png"),
            "image_id": 1,
            "height": 48,
            "width": 64,
            "annotations": [anno([20.0, 10.0, 30.0, 20.0])],
        },
        {
            "file_name": str(tmp_path / "rotated.jpg"),
            "image_id": 2,
            "height": 64,
            "width": 48,
            "annotations": [anno([36.0, 0.0, 12.0, 16.0])],
        },
    ]
    name = "hostile_gray_exif"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=["a", "b", "c", "d"])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_grayscale_and_exif_rotated_images_load_as_upright_three_channel_images(
    grayscale_and_exif_dataset,
):
    cfg = _cfg(
        [
            "DATASETS.TRAIN",
            f"('{grayscale_and_exif_dataset}',)",
            "INPUT.MIN_SIZE_TRAIN",
            "(48,)",
            "INPUT.MAX_SIZE_TRAIN",
            "64",  # both images keep their size
            "SOLVER.IMS_PER_BATCH",
            "2",
            "DATALOADER.NUM_WORKERS",
            "0",
            "DATALOADER.ASPECT_RATIO_GROUPING",
            "False",
        ]
    )
    loaded = {}
    for batch in engine.Trainer.build_train_loader(cfg):
        loaded.update({os.path.basename(x["file_name"]): x for x in batch})
        if len(loaded) == 2:
            break

    gray = loaded["gray.png"]
    assert gray["image"].shape == (3, 48, 64)
    assert (gray["image"][0] == gray["image"][1]).all() and (
        gray["image"][1] == gray["image"][2]
    ).all()
    assert gray["instances"].gt_boxes.tensor.tolist() == [[20, 10, 50, 30]]

    rotated = loaded["rotated.jpg"]
    image = rotated["image"].int()  # RGB, as INPUT.FORMAT says
    assert image.shape == (3, 64, 48)
    red = (image[0] > 200) & (image[1] < 60) & (image[2] < 60)
    assert red[2:14, 38:46].all() and red.sum() < 12 * 16 * 1.2
    assert rotated["instances"].gt_boxes.tensor.tolist() == [[36, 0, 48, 16]]


def test_non_finite_loss_stops_training_with_the_iteration(shapes_root, tmp_path, monkeypatch):
    losses = DSLAProposalGenerator.losses

    def nan_at_iteration_3(self, *args, **kwargs):
        out = losses(self, *args, **kwargs)
        if get_event_storage().iter == 3:
            out["loss_dsla_box"] = out["loss_dsla_box"] * float("nan")
        return out

    monkeypatch.setattr(DSLAProposalGenerator, "losses", nan_at_iteration_3)
    cfg = load_config(
        QUICKSTART,
        short_training_opts(tmp_path / "out", 6, evaluate=True),
    )
    trainer = engine.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    with pytest.raises(FloatingPointError, match=r"Loss became infinite or NaN at iteration=3!"):
        trainer.train()
    assert not (tmp_path / "out" / "model_final.pth").exists()


# Non-finite values inside the network, for both loss types (the quick start and R-101 use GIoU,
# R-50 IoU) and for DSLA as its own detector and as the first stage of GeneralizedRCNN.
R101 = "configs/DSLA/dsla_R_101_DCN_FPN_ms_2x.yaml"
NON_FINITE_CONFIGS = [QUICKSTART, R101, "configs/DSLA/dsla_R_50_FPN_1x.yaml"]
NON_FINITE_IDS = ["quickstart-giou", "R101-giou", "R50-iou"]
# torchvision's CPU deform_conv2d reads out of bounds (a segmentation fault) when offsets are NaN,
# which NaN pixels make them; NaN pixels therefore reach the R-101 recipe's GIoU loss and normalized
# targets here without DCN.
NO_DCN = [
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
    "[False, False, False, False]",
    "MODEL.DSLA.DCN_ON_LAST_CONV",
    "False",
]
TWO_STAGE = [
    "MODEL.META_ARCHITECTURE",
    "GeneralizedRCNN",
    "MODEL.ROI_HEADS.NAME",
    "StandardROIHeads",
    "MODEL.ROI_HEADS.IN_FEATURES",
    "['p3', 'p4', 'p5']",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "MODEL.ROI_BOX_HEAD.NAME",
    "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_FC",
    "1",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "32",
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION",
    "7",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "50",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "50",
]


def _non_finite_model(config, two_stage, opts=()):
    num_classes = load_config(config).MODEL.DSLA.NUM_CLASSES
    extra = [*TWO_STAGE, "MODEL.ROI_HEADS.NUM_CLASSES", str(num_classes)] if two_stage else []
    torch.manual_seed(0)
    return build_model(load_config(config, [*extra, *opts]))


def _nan_inf_batch(size=(64, 64)):
    """Two images with a box each; the first has NaN and inf pixels, as a broken decoder or
    augmentation gives."""
    batch = []
    for _ in range(2):
        inst = Instances(size)
        inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0]]))
        inst.gt_classes = torch.tensor([1])
        batch.append({"image": torch.rand(3, *size) * 255, "instances": inst})
    batch[0]["image"][:, 10:20, 10:20] = float("nan")
    batch[0]["image"][:, 30, 30] = float("inf")
    return batch


@pytest.mark.parametrize("two_stage", [False, True], ids=["DSLA", "GeneralizedRCNN"])
@pytest.mark.parametrize("config", NON_FINITE_CONFIGS, ids=NON_FINITE_IDS)
def test_non_finite_pixels_stop_training_with_floating_point_error_and_the_iteration(
    config, two_stage
):
    model = _non_finite_model(config, two_stage, NO_DCN if config == R101 else ()).train()
    with EventStorage(start_iter=17):
        with pytest.raises(FloatingPointError, match=r"infinite or NaN at iteration=17"):
            model(_nan_inf_batch())


@pytest.mark.parametrize("two_stage", [False, True], ids=["DSLA", "GeneralizedRCNN"])
@pytest.mark.parametrize("config", [QUICKSTART, R101], ids=["quickstart", "R101"])
def test_non_finite_boxes_at_inference_are_dropped_and_the_rest_kept(config, two_stage):
    model = _non_finite_model(config, two_stage, ["MODEL.DSLA.SCORE_THRESH_TEST", "0.0"]).eval()
    image = [{"image": _nan_inf_batch()[1]["image"]}]

    def overflow(module, inputs, outputs):
        # Every distance of P3 non-finite, as after an overflow: the other levels still give
        # detections.
        logits, distances = outputs
        distances[0][:, :, ::2] = float("inf")
        distances[0][:, :, 1::2] = float("nan")
        return logits, distances

    model.proposal_generator.head.register_forward_hook(overflow)
    with torch.no_grad():
        result = model(image)[0]["instances"]
    assert len(result) > 0
    assert torch.isfinite(result.pred_boxes.tensor).all() and torch.isfinite(result.scores).all()
