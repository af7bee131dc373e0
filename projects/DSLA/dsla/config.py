import logging
from typing import Sequence

import torch

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg


def add_dsla_config(cfg):
    """
    Add every config key of this project to ``cfg`` (detectron2's ``get_cfg()``): the DSLA head
    under ``cfg.MODEL.DSLA``, the FCOS baseline under ``cfg.MODEL.FCOS``, the backbones
    (``MODEL.TINY_CONVNET``, ``MODEL.MOBILENET_V2``, ``MODEL.TIMM``, ``MODEL.SWIN``), how
    ``MODEL.WEIGHTS`` is read (``MODEL.WEIGHTS_ALLOW_PICKLE``), the optimizer (``SOLVER``) and the
    evaluation (``TEST``) keys. DSLA's defaults are those of the paper's R-50 model except the loss
    weights, which the R-50 config sets.
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

    # Label assignment (docs/method.md, "The label").
    _C.MODEL.DSLA.INTERVAL_RELAXATION = 0.2  # gamma
    _C.MODEL.DSLA.CORE_ZONE = True
    _C.MODEL.DSLA.IOU_COUPLING = True  # y_d = y_s * IoU
    _C.MODEL.DSLA.IOU_ONLY = False  # y_d = IoU (ablation)
    _C.MODEL.DSLA.CENTER_SAMPLING_RADIUS = 0.0  # 0 disables center sampling
    # Points are at (i + offset) * stride; the authors' models use 0, detectron2's FCOS 0.5.
    _C.MODEL.DSLA.POINT_OFFSET = 0.0

    # Head (docs/method.md, "Head").
    _C.MODEL.DSLA.NUM_CONVS = 4
    _C.MODEL.DSLA.NORM = "GN"
    _C.MODEL.DSLA.CONV_BIAS = False
    _C.MODEL.DSLA.DCN_ON_LAST_CONV = False
    # Distances as relu(scale * raw) in units of the stride, instead of exp(scale * raw) in pixels.
    _C.MODEL.DSLA.NORM_REG_TARGETS = False
    _C.MODEL.DSLA.PRIOR_PROB = 0.01

    # Losses (docs/method.md, "Losses").
    _C.MODEL.DSLA.QFL_BETA = 2.0
    _C.MODEL.DSLA.CLS_LOSS_WEIGHT = 1.0
    _C.MODEL.DSLA.BOX_LOSS_TYPE = "iou"  # "iou" (-log IoU) or "giou" (1 - GIoU)
    _C.MODEL.DSLA.BOX_LOSS_WEIGHT = 1.0
    # "y_s" (the paper's): a positive's box loss weighs its static label, normalized by sum(y_s);
    # "uniform": every positive weighs 1, normalized by their number, as in FCOS (an ablation).
    _C.MODEL.DSLA.BOX_LOSS_WEIGHTING = "y_s"

    # Inference (docs/method.md, "Inference"); detections per image: TEST.DETECTIONS_PER_IMAGE.
    _C.MODEL.DSLA.SCORE_THRESH_TEST = 0.05
    _C.MODEL.DSLA.TOPK_CANDIDATES_TEST = 1000
    _C.MODEL.DSLA.NMS_THRESH_TEST = 0.6

    _add_fcos_config(cfg)
    _add_input_config(cfg)
    _add_backbone_config(cfg)
    _add_weights_config(cfg)
    _add_solver_config(cfg)
    _add_test_config(cfg)


def _add_fcos_config(cfg):
    """
    detectron2's FCOS as the baseline (``META_ARCHITECTURE: "FCOSBaseline"``); defaults are those of
    detectron2's FCOS (``configs/common/models/fcos.py`` in its model zoo).
    """
    _C = cfg
    _C.MODEL.FCOS = CN()
    _C.MODEL.FCOS.NUM_CLASSES = 80
    _C.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    _C.MODEL.FCOS.NUM_CONVS = 4
    _C.MODEL.FCOS.HEAD_NORM = "GN"
    _C.MODEL.FCOS.PRIOR_PROB = 0.01
    # Initial value of the box-regression bias, i.e. of the initial distances in units of the
    # stride. detectron2 decodes relu(raw) distances: if the raw outputs all turn negative early in
    # training (seen with small models trained from scratch), the box branch gets no gradient and
    # dies. 1.0 starts every box one stride wide on each side, out of that trap. 0.0 is
    # detectron2's initialization.
    _C.MODEL.FCOS.BBOX_REG_INIT_BIAS = 0.0
    # (lo, hi) per level, in DSLA's format (MODEL.DSLA.REGRESS_RANGES), so that both detectors can
    # use the same ranges. detectron2's FCOS fixes them at 4-8 x the stride: these values for
    # strides 8 ... 128. A point is positive for a box when lo < max(l, t, r, b) < hi.
    _C.MODEL.FCOS.REGRESS_RANGES = [
        [0.0, 64.0],
        [64.0, 128.0],
        [128.0, 256.0],
        [256.0, 512.0],
        [512.0, float("inf")],
    ]
    _C.MODEL.FCOS.CENTER_SAMPLING_RADIUS = 1.5
    # Points at (i + offset) * stride; detectron2's FCOS: 0.5 (its anchor generator's default).
    _C.MODEL.FCOS.POINT_OFFSET = 0.5
    _C.MODEL.FCOS.FOCAL_LOSS_ALPHA = 0.25
    _C.MODEL.FCOS.FOCAL_LOSS_GAMMA = 2.0
    # Inference; the score is sqrt(classification * centerness). Detections per image:
    # TEST.DETECTIONS_PER_IMAGE.
    _C.MODEL.FCOS.SCORE_THRESH_TEST = 0.2
    _C.MODEL.FCOS.TOPK_CANDIDATES_TEST = 1000
    _C.MODEL.FCOS.NMS_THRESH_TEST = 0.6


def _add_input_config(cfg):
    """
    Training augmentations beside detectron2's resize and ``INPUT.RANDOM_FLIP``, for overhead
    imagery (aerial photos), where no direction is special (:mod:`dsla.data.transforms`).
    """
    cfg.INPUT.VERTICAL_FLIP = False  # a vertical flip with probability 0.5
    cfg.INPUT.RANDOM_ROTATE_90 = False  # a quarter turn by 0, 90, 180 or 270 degrees
    # Brightness, contrast and saturation each scaled by a factor in [1 - x, 1 + x]; 0: none.
    cfg.INPUT.COLOR_JITTER = 0.0


def _add_backbone_config(cfg):
    """
    The DSLA backbones. Each names its outputs by stride: "stage{i}" has stride 2**i. Building a
    backbone reads no file: ImageNet weights arrive through ``MODEL.WEIGHTS``
    (``tools/convert_imagenet_checkpoint.py``). ``MODEL.BACKBONE.FREEZE_AT`` freezes the first
    stages of each, as detectron2's ResNet.
    """
    _C = cfg
    # The quick start's small from-scratch network (modeling/backbone/tiny.py).
    _C.MODEL.TINY_CONVNET = CN()
    _C.MODEL.TINY_CONVNET.WIDTHS = [32, 64, 128, 256, 256]
    _C.MODEL.TINY_CONVNET.NORM = "BN"
    _C.MODEL.TINY_CONVNET.OUT_FEATURES = ["stage3", "stage4", "stage5"]

    # torchvision's MobileNetV2 (modeling/backbone/mobilenet.py); NORM "FrozenBN" or "BN".
    _C.MODEL.MOBILENET_V2 = CN()
    _C.MODEL.MOBILENET_V2.OUT_FEATURES = ["stage3", "stage4", "stage5"]
    _C.MODEL.MOBILENET_V2.WIDTH_MULT = 1.0
    _C.MODEL.MOBILENET_V2.NORM = "FrozenBN"

    # Any timm model with features_only (modeling/backbone/timm_backbone.py).
    _C.MODEL.TIMM = CN()
    _C.MODEL.TIMM.NAME = "resnet50"
    _C.MODEL.TIMM.OUT_FEATURES = ["stage3", "stage4", "stage5"]
    _C.MODEL.TIMM.NORM = "FrozenBN"
    _C.MODEL.TIMM.DROP_PATH_RATE = 0.0

    # Swin Transformer through timm (modeling/backbone/swin.py).
    _C.MODEL.SWIN = CN()
    # timm model name: the architecture only.
    _C.MODEL.SWIN.NAME = "swin_small_patch4_window7_224"
    _C.MODEL.SWIN.DROP_PATH_RATE = 0.2
    # "stage1" ... "stage4" (strides 4 ... 32); C3-C5 are stages 2-4.
    _C.MODEL.SWIN.OUT_FEATURES = ["stage2", "stage3", "stage4"]
    # Building a model reads no file any more; configs and command lines that still name this key
    # keep loading, with a warning that it is ignored.
    _C.register_deprecated_key("MODEL.SWIN.PRETRAINED_WEIGHTS")


def _add_weights_config(cfg):
    """How ``MODEL.WEIGHTS`` is read (:class:`dsla.checkpoint.AtomicCheckpointer`)."""
    # Unpickle the file as detectron2 does, running any code it names, instead of as plain data
    # (numpy arrays, tensors); only for a file one trusts (docs/security.md).
    cfg.MODEL.WEIGHTS_ALLOW_PICKLE = False


def _add_solver_config(cfg):
    """
    ``SOLVER.OPTIMIZER``: "SGD" (detectron2's default) or "ADAMW";
    ``SOLVER.BIAS_RULES_SKIP_NORM_AND_DCN`` and ``SOLVER.NO_WEIGHT_DECAY_KEYS`` (see
    :func:`dsla.solver.get_param_groups`).
    """
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BIAS_RULES_SKIP_NORM_AND_DCN = False
    cfg.SOLVER.NO_WEIGHT_DECAY_KEYS = []


def _add_test_config(cfg):
    """
    Evaluation and inference keys: the best checkpoint, :class:`dsla.evaluation.ScoreIoUEvaluator`,
    and inference in reduced precision; ``MODEL.CHANNELS_LAST`` (training and inference).
    """
    # The model's weights and activations in channels-last memory order, which oneDNN's CPU
    # convolutions run faster (docs/benchmarks.md, "CPU speed options"); results are unchanged.
    cfg.MODEL.CHANNELS_LAST = False
    # Inference (evaluation, demo.py) under autocast: bfloat16 on the CPU (which needs its bfloat16
    # instructions, as SOLVER.AMP.ENABLED does), float16 on CUDA.
    cfg.TEST.AMP = CN({"ENABLED": False})
    # detectron2's BestCheckpointer after each evaluation (needs TEST.EVAL_PERIOD > 0); "" disables
    # it.
    cfg.TEST.BEST_CHECKPOINT_METRIC = ""  # e.g. "bbox/AP"
    cfg.TEST.BEST_CHECKPOINT_MODE = "max"
    # Run ScoreIoUEvaluator beside the dataset's evaluator, and the k of its top-k mean IoU.
    cfg.TEST.SCORE_IOU_EVAL = False
    cfg.TEST.SCORE_IOU_TOPK = [10, 100]


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
