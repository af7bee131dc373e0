"""
The DSLA configs shipped with the package (``dsla/model_zoo/configs``, the repository's
``configs/``), found from any directory and from an installed package, as ``detectron2.model_zoo``
does for detectron2's.
"""

import os

from detectron2.config import LazyConfig

from ..config import get_dsla_cfg

__all__ = ["get_config", "get_config_file", "resolve_config_file"]

CONFIG_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def get_config_file(config_path: str) -> str:
    """
    The absolute path of a shipped config, given relative to ``configs/``, e.g.
    ``"DSLA/dsla_R_50_FPN_1x.yaml"`` or ``"DSLA/dsla_R_50_FPN_1x.py"``.
    """
    path = os.path.join(CONFIG_ROOT, config_path)
    if not os.path.isfile(path):
        raise RuntimeError(
            f"{config_path} is not a DSLA config; the configs are under {CONFIG_ROOT}"
        )
    return path


def resolve_config_file(config_file: str) -> str:
    """
    The path of a config: an existing file as given, else a config shipped with the package, written
    either relative to its config tree (``DSLA/dsla_quickstart_shapes.yaml``) or as in the
    repository (``configs/DSLA/...``).
    """
    if os.path.isfile(config_file):
        return os.path.abspath(config_file)
    return get_config_file(
        config_file[len("configs/") :] if config_file.startswith("configs/") else config_file
    )


def get_config(config_path: str, device_fallback: bool = True):
    """
    A shipped config: for a YAML, detectron2's config with the DSLA keys (a ``CfgNode``, as
    :func:`dsla.get_dsla_cfg` gives it, with ``device_fallback``); for a ``.py``, the LazyConfig (an
    omegaconf ``DictConfig``), whose ``train.device`` is resolved when it runs (``train_net.py``,
    ``--require-gpu``).
    """
    path = get_config_file(config_path)
    if path.endswith(".py"):
        return LazyConfig.load(path)
    return get_dsla_cfg(path, device_fallback=device_fallback)
