"""Multi-process training on the CPU (GLOO) as well as on GPUs."""

import contextlib
import functools

from detectron2.engine import defaults
from detectron2.engine.defaults import create_ddp_model as _d2_create_ddp_model

__all__ = ["create_ddp_model", "cpu_ddp_for_default_trainer"]


def create_ddp_model(model, device: str, **kwargs):
    """
    detectron2's ``create_ddp_model`` for a model on ``device``. detectron2 passes
    ``device_ids=[local rank]``, which PyTorch rejects for a CPU model; without device ids DDP works
    on the CPU with GLOO (``--num-gpus N`` without a GPU).
    """
    if device == "cpu":
        kwargs["device_ids"] = None
    return _d2_create_ddp_model(model, **kwargs)


@contextlib.contextmanager
def cpu_ddp_for_default_trainer(device: str):
    """
    Within the context, detectron2's ``DefaultTrainer``, which calls ``create_ddp_model`` itself,
    wraps its model with :func:`create_ddp_model` for ``device``.
    """
    defaults.create_ddp_model = functools.partial(create_ddp_model, device=device)
    try:
        yield
    finally:
        defaults.create_ddp_model = _d2_create_ddp_model
