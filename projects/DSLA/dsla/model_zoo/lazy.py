"""
LazyConfig pieces derived from a YAML config, so that ``configs/DSLA/X.py`` and
``configs/DSLA/X.yaml`` cannot
drift: each piece is a ``LazyCall`` of the builder the YAML path uses, with the arguments that
    builder's
``from_config`` reads from the YAML. The layout and key names are those of detectron2's
``configs/common``.
"""

import inspect
from typing import Any, Dict, Mapping

from fvcore.common.param_scheduler import CosineParamScheduler, MultiStepParamScheduler
from omegaconf import DictConfig, OmegaConf

from detectron2.config import CfgNode, get_cfg
from detectron2.config import LazyCall as L
from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone, build_backbone
from detectron2.modeling.meta_arch.fcos import FCOSHead
from detectron2.solver import WarmupParamScheduler

from ..config import add_dsla_config
from ..data import DSLADatasetMapper
from ..evaluation import build_evaluator
from ..modeling import DSLADetector, DSLAHead, DSLAProposalGenerator, FCOSBaseline
from ..solver import get_param_groups, make_optimizer, optimizer_kwargs, param_group_kwargs

__all__ = [
    "build_backbone_from_keys",
    "lazy_dataloader",
    "lazy_lr_multiplier",
    "lazy_model",
    "lazy_optimizer",
    "lazy_train",
]

# The MODEL keys the DSLA backbone builders read.
BACKBONE_KEYS = ("BACKBONE", "FPN", "RESNETS", "SWIN", "TINY_CONVNET", "MOBILENET_V2", "TIMM")


def _plain(node):
    """A CfgNode (or part of one) as plain dicts and lists, which OmegaConf stores."""
    if isinstance(node, Mapping):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return node


def build_backbone_from_keys(model_keys: Mapping, input_channels: int = 3) -> Backbone:
    """
    detectron2's ``build_backbone`` on the DSLA defaults updated with ``model_keys``, a nested
    mapping of ``MODEL`` keys (``BACKBONE.NAME``, ``RESNETS``, ``SWIN``, ``FPN``, ...), e.g. a
    LazyConfig node.
    """
    if isinstance(model_keys, DictConfig):
        model_keys = OmegaConf.to_container(model_keys, resolve=True)
    cfg = get_cfg()
    add_dsla_config(cfg)
    cfg.MODEL.merge_from_other_cfg(CfgNode(dict(model_keys)))
    return build_backbone(cfg, ShapeSpec(channels=input_channels))


def _lazy_backbone(cfg: CfgNode):
    return L(build_backbone_from_keys)(
        model_keys={key: _plain(cfg.MODEL[key]) for key in BACKBONE_KEYS},
        input_channels=len(cfg.MODEL.PIXEL_MEAN),
    )


def lazy_model(cfg: CfgNode):
    """
    The detector that ``build_model(cfg)`` builds, as a LazyCall tree: the ``DSLA`` detector, or
    detectron2's FCOS as ``FCOSBaseline``.
    """
    if cfg.MODEL.META_ARCHITECTURE == "FCOSBaseline":
        return _lazy_fcos(cfg)
    if cfg.MODEL.META_ARCHITECTURE != "DSLA" or cfg.MODEL.PROPOSAL_GENERATOR.NAME != "DSLA":
        raise ValueError(
            "LazyConfigs are derived for the DSLA detector and FCOSBaseline, got "
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} with "
            f"MODEL.PROPOSAL_GENERATOR.NAME {cfg.MODEL.PROPOSAL_GENERATOR.NAME!r}"
        )
    # The FPN levels the head reads, without building the backbone.
    shapes = [
        ShapeSpec(channels=cfg.MODEL.FPN.OUT_CHANNELS, stride=s) for s in cfg.MODEL.DSLA.FPN_STRIDES
    ]
    proposal_generator = DSLAProposalGenerator.from_config(
        cfg, dict(zip(cfg.MODEL.DSLA.IN_FEATURES, shapes)), two_stage=False
    )
    proposal_generator["head"] = L(DSLAHead)(**DSLAHead.from_config(cfg, shapes))
    return L(DSLADetector)(
        backbone=_lazy_backbone(cfg),
        proposal_generator=L(DSLAProposalGenerator)(**proposal_generator),
        pixel_mean=list(cfg.MODEL.PIXEL_MEAN),
        pixel_std=list(cfg.MODEL.PIXEL_STD),
    )


def _lazy_fcos(cfg: CfgNode):
    """:class:`FCOSBaseline` as ``FCOSBaseline.from_config`` builds it, as a LazyCall tree."""
    fcos = cfg.MODEL.FCOS
    strides = {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
    shapes = [
        ShapeSpec(channels=cfg.MODEL.FPN.OUT_CHANNELS, stride=strides[f]) for f in fcos.IN_FEATURES
    ]
    return L(FCOSBaseline)(
        backbone=_lazy_backbone(cfg),
        head=L(FCOSHead)(
            input_shape=shapes,
            num_classes=fcos.NUM_CLASSES,
            conv_dims=[cfg.MODEL.FPN.OUT_CHANNELS] * fcos.NUM_CONVS,
            norm=fcos.HEAD_NORM,
            prior_prob=fcos.PRIOR_PROB,
        ),
        head_in_features=list(fcos.IN_FEATURES),
        num_classes=fcos.NUM_CLASSES,
        regress_ranges=[tuple(r) for r in fcos.REGRESS_RANGES],
        point_offset=fcos.POINT_OFFSET,
        center_sampling_radius=fcos.CENTER_SAMPLING_RADIUS,
        focal_loss_alpha=fcos.FOCAL_LOSS_ALPHA,
        focal_loss_gamma=fcos.FOCAL_LOSS_GAMMA,
        test_score_thresh=fcos.SCORE_THRESH_TEST,
        test_topk_candidates=fcos.TOPK_CANDIDATES_TEST,
        test_nms_thresh=fcos.NMS_THRESH_TEST,
        max_detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        pixel_mean=list(cfg.MODEL.PIXEL_MEAN),
        pixel_std=list(cfg.MODEL.PIXEL_STD),
        bbox_reg_init_bias=fcos.BBOX_REG_INIT_BIAS,
    )


def _lazy_augmentation(augmentation):
    """A detectron2 ``Augmentation`` object as the LazyCall that makes it (its constructor's
    arguments)."""
    parameters = inspect.signature(type(augmentation).__init__).parameters
    kwargs = {
        name: _plain(getattr(augmentation, name))
        for name, p in parameters.items()
        if name != "self"
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and hasattr(augmentation, name)
    }
    return L(type(augmentation))(**kwargs)


def _lazy_mapper(cfg: CfgNode, is_train: bool):
    kwargs = DSLADatasetMapper.from_config(cfg, is_train)
    kwargs["augmentations"] = [_lazy_augmentation(a) for a in kwargs["augmentations"]]
    return L(DSLADatasetMapper)(**kwargs)


def lazy_dataloader(cfg: CfgNode) -> DictConfig:
    """
    ``dataloader.train``, ``dataloader.test`` (the first of ``DATASETS.TEST``) and
    ``dataloader.evaluator`` (:func:`dsla.engine.build_evaluator`) of the YAML training.
    """
    dataloader = OmegaConf.create()
    dataloader.train = L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(
            names=list(cfg.DATASETS.TRAIN), filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        ),
        mapper=_lazy_mapper(cfg, is_train=True),
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    dataloader.test = L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names=cfg.DATASETS.TEST[0], filter_empty=False),
        mapper=_lazy_mapper(cfg, is_train=False),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    dataloader.evaluator = L(build_evaluator)(
        # The keys build_evaluator reads; results go under train.output_dir as in the YAML training.
        cfg=dict(
            OUTPUT_DIR="${train.output_dir}",
            TEST=dict(
                SCORE_IOU_EVAL=cfg.TEST.SCORE_IOU_EVAL, SCORE_IOU_TOPK=cfg.TEST.SCORE_IOU_TOPK
            ),
        ),
        dataset_name="${..test.dataset.names}",
    )
    return dataloader


def lazy_optimizer(cfg: CfgNode):
    """
    The optimizer of :func:`dsla.solver.build_optimizer`; as in detectron2's LazyConfigs,
    ``params.model`` is set to the model before it is instantiated.
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE != "full_model":
        raise ValueError(
            f"LazyConfigs clip gradients only as 'full_model', got CLIP_TYPE {clip.CLIP_TYPE!r}"
        )
    return L(make_optimizer)(
        params=L(get_param_groups)(model=None, **param_group_kwargs(cfg)), **optimizer_kwargs(cfg)
    )


def lazy_lr_multiplier(cfg: CfgNode):
    """The schedule of detectron2's ``build_lr_scheduler(cfg)``, as a LazyConfig
    ``lr_multiplier``."""
    solver = cfg.SOLVER
    if solver.LR_SCHEDULER_NAME == "WarmupMultiStepLR":
        steps = [s for s in solver.STEPS if s <= solver.MAX_ITER]
        scheduler = L(MultiStepParamScheduler)(
            values=[solver.GAMMA**k for k in range(len(steps) + 1)],
            milestones=steps,
            num_updates=solver.MAX_ITER,
        )
    elif solver.LR_SCHEDULER_NAME == "WarmupCosineLR":
        scheduler = L(CosineParamScheduler)(
            start_value=1.0, end_value=solver.BASE_LR_END / solver.BASE_LR
        )
    else:
        raise ValueError(
            f"No LazyConfig schedule for SOLVER.LR_SCHEDULER_NAME {solver.LR_SCHEDULER_NAME!r}"
        )
    return L(WarmupParamScheduler)(
        scheduler=scheduler,
        warmup_factor=solver.WARMUP_FACTOR,
        warmup_length=min(solver.WARMUP_ITERS / solver.MAX_ITER, 1.0),
        warmup_method=solver.WARMUP_METHOD,
        rescale_interval=solver.RESCALE_INTERVAL,
    )


def lazy_train(cfg: CfgNode) -> Dict[str, Any]:
    """The ``train`` dict of detectron2's ``configs/common/train.py``, with the YAML's values."""
    return dict(
        output_dir=cfg.OUTPUT_DIR,
        init_checkpoint=cfg.MODEL.WEIGHTS,
        init_checkpoint_allow_pickle=cfg.MODEL.WEIGHTS_ALLOW_PICKLE,
        max_iter=cfg.SOLVER.MAX_ITER,
        # amp.test, channels_last: this project's (TEST.AMP.ENABLED, MODEL.CHANNELS_LAST).
        amp=dict(enabled=cfg.SOLVER.AMP.ENABLED, test=cfg.TEST.AMP.ENABLED),
        channels_last=cfg.MODEL.CHANNELS_LAST,
        ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
        checkpointer=dict(period=cfg.SOLVER.CHECKPOINT_PERIOD, max_to_keep=100),
        eval_period=cfg.TEST.EVAL_PERIOD,
        log_period=20,
        device=cfg.MODEL.DEVICE,
    )
