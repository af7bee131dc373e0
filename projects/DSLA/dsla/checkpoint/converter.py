"""
What the checkpoint converters (``tools/convert_imagenet_checkpoint.py``,
``tools/convert_mmdet_checkpoint.py``) share: their command line, the target model of a config, the
report of what was converted, and the output file, ``{"model": state_dict, "__author__": ...}``,
that ``MODEL.WEIGHTS`` loads.
"""

import argparse
import logging
from collections import defaultdict
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from detectron2.config import CfgNode
from detectron2.modeling import build_model

from ..config import get_dsla_cfg
from ..utils.file_io import atomic_write
from .convert_imagenet import PREFIX, convert_imagenet_state_dict
from .convert_mmdet import Conversion
from .io import load_state_dict_file

__all__ = [
    "build_target_model",
    "convert_imagenet_checkpoint",
    "converter_argument_parser",
    "parse_converter_args",
    "report_conversion",
    "save_conversion",
]

logger = logging.getLogger(__name__)


def converter_argument_parser(
    description: str, input_help: str, default_config: Optional[str] = None
) -> argparse.ArgumentParser:
    """
    ``IN OUT.pth --config CFG [--allow-pickle] [KEY VALUE ...]``; parse with
    :func:`parse_converter_args`.

    Args:
        default_config: the config when ``--config`` is not given; None makes it required.
    """
    parser = argparse.ArgumentParser(
        description=description, epilog="Trailing KEY VALUE pairs override the config."
    )
    parser.add_argument("input", metavar="IN", help=input_help)
    parser.add_argument("output", metavar="OUT.pth", help="file for MODEL.WEIGHTS")
    parser.add_argument(
        "--config",
        required=default_config is None,
        default=default_config,
        help="config of the target model, e.g. configs/DSLA/...yaml",
    )
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load a checkpoint that holds arbitrary Python objects (only one you trust; "
        "docs/security.md)",
    )
    return parser


def parse_converter_args(
    parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None
) -> argparse.Namespace:
    """The arguments of ``parser``, with the KEY VALUE overrides (in any position) as
    ``args.opts``."""
    args, opts = parser.parse_known_args(argv)
    unknown = [o for o in opts if o.startswith("--")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.output.endswith(".pkl"):
        parser.error(
            "OUT must not end in .pkl: detectron2 would read it as a pickle, not as a torch file"
        )
    args.opts = opts
    return args


def build_target_model(config_file: str, opts: Sequence[str] = ()) -> Tuple[CfgNode, nn.Module]:
    """The config and model of ``config_file`` with ``opts``: on the CPU, with the random weights
    of its initialization (``MODEL.WEIGHTS`` is not read)."""
    cfg = get_dsla_cfg(config_file, [*opts, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    return cfg, build_model(cfg)


def _grouped(keys: Sequence[str]) -> List[str]:
    """``a.b.weight``, ``a.b.bias`` -> ``a.b.{bias, weight}``, in the order of first appearance."""
    groups = defaultdict(list)
    for key in keys:
        module, _, name = key.rpartition(".")
        groups[module].append(name)
    return [
        f"{module}.{names[0]}" if len(names) == 1 else f"{module}.{{{', '.join(sorted(names))}}}"
        for module, names in groups.items()
    ]


def report_conversion(conversion: Conversion, part: str = "") -> None:
    """
    Log what ``conversion`` filled and left at initialization in the model's ``part`` (a key
    prefix, e.g. ``backbone.bottom_up.``; "" for the whole model), the rest of the model left at
    initialization in one line, and every source tensor not used, with the reason.
    """
    filled = [k for k in conversion.state_dict if k.startswith(part)]
    initial = [k for k in conversion.missing if k.startswith(part)]
    others = len(conversion.missing) - len(initial)
    where = part.rstrip(".") or "the model"
    for line in _grouped(filled):
        logger.info(f"Filled: {line}")
    for line in _grouped(initial):
        logger.warning(f"Left at initialization: {line}")
    for key, reason in conversion.unmatched:
        logger.warning(f"Not used: {key} ({reason})")
    summary = (
        f"{where}: {len(filled)} tensors filled, {len(initial)} left at initialization; "
        f"{len(conversion.unmatched)} tensors of the checkpoint not used"
    )
    if others:
        summary += f"; the model's other {others} tensors (FPN, head) start from initialization"
    logger.info(summary)


def save_conversion(conversion: Conversion, model: nn.Module, path: str, author: str) -> None:
    """Write ``{"model": conversion.state_dict, "__author__": author}`` to ``path`` with
    ``torch.save``, atomically, after checking that ``model`` takes the tensors."""
    model.load_state_dict(conversion.state_dict, strict=False)
    data = {"model": conversion.state_dict, "__author__": author}
    atomic_write(path, lambda f: torch.save(data, f))
    logger.info(f"Wrote {path}; use it as MODEL.WEIGHTS")


def convert_imagenet_checkpoint(args: argparse.Namespace) -> int:
    """
    ``tools/convert_imagenet_checkpoint.py``: convert ``args.input`` onto the backbone of the model
    of ``args.config`` (:func:`~dsla.checkpoint.convert_imagenet.convert_imagenet_state_dict`),
    report and write ``args.output``.

    Returns:
        the exit status: 1, writing nothing, when no tensor of the checkpoint finds a place.
    """
    cfg, model = build_target_model(args.config, args.opts)
    conversion = convert_imagenet_state_dict(
        load_state_dict_file(args.input, args.allow_pickle), model
    )
    report_conversion(conversion, PREFIX)
    if not conversion.state_dict:
        logger.error(
            f"No tensor of {args.input} fits the backbone of {args.config} "
            f"({cfg.MODEL.BACKBONE.NAME}); nothing written"
        )
        return 1
    save_conversion(conversion, model, args.output, f"ImageNet weights from {args.input}")
    # The weights give ImageNet features only under the normalization they were trained with.
    logger.info(
        f"Inputs of this config: {cfg.INPUT.FORMAT}, PIXEL_MEAN {list(cfg.MODEL.PIXEL_MEAN)}, "
        f"PIXEL_STD {list(cfg.MODEL.PIXEL_STD)}; they must be those the ImageNet weights were "
        "trained with"
    )
    return 0
