"""
What the benchmark runs: models with the weights of seed 0 (no checkpoint) and batches of random
images and boxes.
"""

from typing import Dict, List, Sequence

import torch

from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from ..config import get_dsla_cfg
from ..model_zoo import resolve_config_file

__all__ = ["CONFIGS", "benchmark_cfg", "build", "build_seeded", "make_batch", "random_instances"]

# The two detectors compared, on the same ResNet-50-FPN (shipped configs, relative to configs/).
CONFIGS = {
    "DSLA": "DSLA/dsla_R_50_FPN_1x.yaml",
    "FCOS": "FCOS-Baseline/fcos_R_50_FPN_1x.yaml",
}


def random_instances(
    height: int, width: int, num_boxes: int, num_classes: int, generator: torch.Generator
) -> Instances:
    """``num_boxes`` random ground-truth boxes and classes in a ``height`` x ``width`` image."""
    xy = torch.rand(num_boxes, 2, generator=generator) * torch.tensor([width * 0.8, height * 0.8])
    wh = (torch.rand(num_boxes, 2, generator=generator) * 0.5 + 0.02) * torch.tensor(
        [width, height]
    )
    boxes = torch.cat(
        [xy, torch.minimum(xy + wh, torch.tensor([width - 1.0, height - 1.0]))], dim=1
    )
    inst = Instances((height, width))
    inst.gt_boxes = Boxes(boxes)
    inst.gt_classes = torch.randint(0, num_classes, (num_boxes,), generator=generator)
    return inst


def make_batch(
    height: int, width: int, batch_size: int, num_boxes: int = 10, num_classes: int = 80, seed=0
) -> List[Dict]:
    """A batch in detectron2's input format: random images (float, 0-255) and random boxes."""
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.rand(3, height, width, generator=generator) * 255,
            "instances": random_instances(height, width, num_boxes, num_classes, generator),
            "height": height,
            "width": width,
        }
        for _ in range(batch_size)
    ]


def benchmark_cfg(config_file: str, device: str = "cpu", opts: Sequence[str] = ()):
    """
    The config of ``config_file`` (see :func:`dsla.model_zoo.resolve_config_file`) on ``device``,
    without pretrained weights, merged with ``opts``.
    """
    return get_dsla_cfg(
        resolve_config_file(config_file), ["MODEL.DEVICE", device, "MODEL.WEIGHTS", "", *opts]
    )


def build_seeded(cfg) -> torch.nn.Module:
    """The model of ``cfg`` with the weights of seed 0, the same for every run and variant."""
    torch.manual_seed(0)
    return build_model(cfg)


def build(name: str, device: str) -> torch.nn.Module:
    """The detector ``name`` (a key of ``CONFIGS``) on ``device``."""
    return build_seeded(benchmark_cfg(CONFIGS[name], device))
