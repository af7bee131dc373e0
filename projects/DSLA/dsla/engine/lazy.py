"""
Training and evaluation of a detectron2 LazyConfig (``configs/DSLA/*.py``), as detectron2's
``tools/lazyconfig_train_net.py`` does it, with DSLA's atomic checkpoints and the CPU fallback.

The config follows detectron2's layout: ``model``, ``dataloader.train``, ``dataloader.test``,
``dataloader.evaluator``, ``optimizer``, ``lr_multiplier`` and ``train`` (``output_dir``,
``init_checkpoint``, ``init_checkpoint_allow_pickle``, ``max_iter``, ``eval_period``,
``log_period``, ``device``, ``checkpointer``, ``amp.enabled``, ``ddp``).
"""

import logging

import torch

from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    default_setup,
    default_writers,
    hooks,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import AtomicCheckpointer
from ..config import resolve_device
from ..utils.precision import inference_autocast
from .amp import trainer_class
from .ddp import create_ddp_model

__all__ = ["do_test", "do_train", "setup_lazy"]

logger = logging.getLogger(__name__)


def setup_lazy(args):
    """
    The LazyConfig of ``args.config_file`` with ``key=value`` overrides ``args.opts``, and
    detectron2's ``default_setup``. ``train.device`` CUDA runs on the CPU when there is none, unless
    ``args.require_gpu``.
    """
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="dsla")
    cfg.train.device = resolve_device(cfg.train.device, args.require_gpu)
    return cfg


def _checkpointer(cfg, model, **kwargs):
    # Configs written before the key existed read their checkpoint as data.
    allow_pickle = cfg.train.get("init_checkpoint_allow_pickle", False)
    return AtomicCheckpointer(model, cfg.train.output_dir, allow_pickle=allow_pickle, **kwargs)


def _build_model(cfg):
    """``cfg.model`` on ``train.device``, in channels-last order with ``train.channels_last``."""
    model = instantiate(cfg.model).to(cfg.train.device)
    if cfg.train.get("channels_last", False):
        model.to(memory_format=torch.channels_last)
    return model


def _ddp(cfg, model):
    return create_ddp_model(model, cfg.train.device, **cfg.train.ddp)


def do_test(cfg, model):
    """Evaluate ``model`` on ``dataloader.test`` with ``dataloader.evaluator``; None if there is no
    evaluator."""
    if "evaluator" not in cfg.dataloader:
        return None
    with inference_autocast(cfg.train.amp.get("test", False), cfg.train.device):
        results = inference_on_dataset(
            model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
        )
    print_csv_format(results)
    return results


def do_train(args, cfg):
    """
    Train ``cfg.model`` with detectron2's SimpleTrainer and hooks; with ``train.amp.enabled``
    detectron2's AMPTrainer on CUDA, :class:`CPUAMPTrainer` (bfloat16) on the CPU.
    """
    # Chosen (and CPU AMP refused on a CPU without bfloat16) before the model and data are built.
    trainer_cls = trainer_class(cfg.train.amp.enabled, cfg.train.device)
    model = _build_model(cfg)
    logger.info(f"Model:\n{model}")

    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    model = _ddp(cfg, model)
    trainer = trainer_cls(model, train_loader, optimizer)
    checkpointer = _checkpointer(cfg, model, trainer=trainer)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter),
                period=cfg.train.log_period,
            )
            if comm.is_main_process()
            else None,
        ]
    )

    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def lazy_main(args):
    cfg = setup_lazy(args)
    if not args.eval_only:
        return do_train(args, cfg)
    model = _ddp(cfg, _build_model(cfg))
    _checkpointer(cfg, model).resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    return do_test(cfg, model)
