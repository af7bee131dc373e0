import logging
from typing import Sequence

import torch

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from .evaluation.score_iou import add_score_iou_config
from .modeling.backbone.swin import add_swin_config
from .modeling.backbone.tiny import add_tiny_convnet_config
from .modeling.fcos_baseline import add_fcos_baseline_config
from .solver import add_solver_config


def add_dsla_config(cfg):
    """
    Add the config keys of DSLA under ``cfg.MODEL.DSLA``. Defaults are those of the paper's R-50
    model except the loss weights, which the R-50 config sets.
    """
    _C = cfg
    _C.MODEL.DSLA = CN()
    _C.MODEL.DSLA.NUM_CLASSES = 80
    _C.MODEL.DSLA.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    _C.MODEL.DSLA.FPN_STRIDES = [8, 16, 32, 64, 128]
    # (lo, hi) per level, in pixels of the network input; the last hi is +inf (YAML: .inf).
    _C.MODEL.DSLA.REGRESS_RANGES = [
        [0.0, 64.0],
        [64.0, 128.0],
        [128.0, 256.0],
        [256.0, 512.0],
        [512.0, float("inf")],
    ]

    # Label assignment (spec section 1).
    _C.MODEL.DSLA.INTERVAL_RELAXATION = 0.2  # gamma
    _C.MODEL.DSLA.CORE_ZONE = True
    _C.MODEL.DSLA.IOU_COUPLING = True  # y_d = y_s * IoU
    _C.MODEL.DSLA.IOU_ONLY = False  # y_d = IoU (ablation)
    _C.MODEL.DSLA.CENTER_SAMPLING_RADIUS = 0.0  # 0 disables center sampling
    # Points are at (i + offset) * stride; the authors' models use 0, detectron2's FCOS 0.5.
    _C.MODEL.DSLA.POINT_OFFSET = 0.0

    # Head (spec section 3).
    _C.MODEL.DSLA.NUM_CONVS = 4
    _C.MODEL.DSLA.NORM = "GN"
    _C.MODEL.DSLA.CONV_BIAS = False
    _C.MODEL.DSLA.DCN_ON_LAST_CONV = False
    # Distances as relu(scale * raw) in units of the stride, instead of exp(scale * raw) in pixels.
    _C.MODEL.DSLA.NORM_REG_TARGETS = False
    _C.MODEL.DSLA.PRIOR_PROB = 0.01

    # Losses (spec section 2).
    _C.MODEL.DSLA.QFL_BETA = 2.0
    _C.MODEL.DSLA.CLS_LOSS_WEIGHT = 1.0
    _C.MODEL.DSLA.BOX_LOSS_TYPE = "iou"  # "iou" (-log IoU) or "giou" (1 - GIoU)
    _C.MODEL.DSLA.BOX_LOSS_WEIGHT = 1.0

    # Inference (spec section 5); detections per image: TEST.DETECTIONS_PER_IMAGE.
    _C.MODEL.DSLA.SCORE_THRESH_TEST = 0.05
    _C.MODEL.DSLA.TOPK_CANDIDATES_TEST = 1000
    _C.MODEL.DSLA.NMS_THRESH_TEST = 0.6

    # detectron2's BestCheckpointer after each evaluation (needs TEST.EVAL_PERIOD > 0); "" disables
    # it.
    _C.TEST.BEST_CHECKPOINT_METRIC = ""  # e.g. "bbox/AP"
    _C.TEST.BEST_CHECKPOINT_MODE = "max"

    add_fcos_baseline_config(cfg)
    add_score_iou_config(cfg)
    add_tiny_convnet_config(cfg)
    add_swin_config(cfg)
    add_solver_config(cfg)


def resolve_device(device: str, require_gpu: bool = False) -> str:
    """
    The device to run on when a config asks for ``device``: a CUDA device without CUDA available
    becomes "cpu" with a warning, so that configs written for GPUs (detectron2's default
    ``MODEL.DEVICE`` is "cuda") also run on a laptop. With ``require_gpu``, a missing GPU is an
    error instead.
    """
    if torch.device(device).type != "cuda" or torch.cuda.is_available():
        return device
    if require_gpu:
        raise RuntimeError(
            f"The config asks for device {device!r} and --require-gpu was given, but CUDA is not "
            "available "
            "(torch.cuda.is_available() is False: no NVIDIA driver, no visible GPU, or a CPU-only "
            "PyTorch)."
        )
    logging.getLogger(__name__).warning(
        f"The config asks for device {device!r} but CUDA is not available; running on the CPU "
        "instead "
        "(pass --require-gpu to make this an error)."
    )
    return "cpu"


def get_dsla_cfg(
    config_file: str,
    opts: Sequence[str] = (),
    freeze: bool = False,
    require_gpu: bool = False,
    device_fallback: bool = True,
) -> CN:
    """
    detectron2's default config with the DSLA keys, merged with ``config_file`` and ``KEY VALUE``
    ``opts``. ``MODEL.DEVICE`` is resolved by :func:`resolve_device`: CUDA falls back to the CPU
    unless ``require_gpu``. ``device_fallback=False`` keeps ``MODEL.DEVICE`` as written, for configs
    derived from this one (LazyConfigs) whose device is resolved where they run.
    """
    cfg = get_cfg()
    add_dsla_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if device_fallback:
        cfg.MODEL.DEVICE = resolve_device(cfg.MODEL.DEVICE, require_gpu)
    if freeze:
        cfg.freeze()
    return cfg
