"""
Training and evaluation of DSLA: what detectron2 keeps in ``detectron2.engine`` and its
``tools/train_net.py`` / ``tools/lazyconfig_train_net.py``, for YAML configs and LazyConfigs alike.
``train_net.py`` is ``launch(main, ...)`` over :func:`main`.
"""

from ..config import resolve_device
from .amp import CPUAMPTrainer, check_cpu_bfloat16, cpu_has_bfloat16, trainer_class
from .defaults import (
    Trainer,
    add_require_gpu_argument,
    build_evaluator,
    default_argument_parser,
    final_metrics,
    main,
    setup,
)
from .lazy import do_test, do_train, setup_lazy

__all__ = [
    "CPUAMPTrainer",
    "Trainer",
    "add_require_gpu_argument",
    "build_evaluator",
    "check_cpu_bfloat16",
    "cpu_has_bfloat16",
    "default_argument_parser",
    "do_test",
    "do_train",
    "final_metrics",
    "main",
    "resolve_device",
    "setup",
    "setup_lazy",
    "trainer_class",
]
