"""CPU latency of the exported models (TorchScript, ONNX through onnxruntime) against eager."""

import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..export import (
    FORMATS,
    ExportedModel,
    compare_detections,
    eager_detections,
    export_model,
    measure_latency,
)
from .inputs import CONFIGS, benchmark_cfg, build_seeded

__all__ = ["EXPORT_CONFIGS", "benchmark_export"]

logger = logging.getLogger(__name__)

EXPORT_CONFIGS = {"quickstart": "DSLA/dsla_quickstart_shapes.yaml", "R-50": CONFIGS["DSLA"]}


def benchmark_export(
    names: Sequence[str],
    size: Tuple[int, int],
    reps: int,
    output_dir: str,
    score_thresh: Optional[float] = None,
) -> List[Dict]:
    """
    CPU latency of one ``size`` (H, W) image through each of the ``EXPORT_CONFIGS`` named (random
    weights), eager, traced to TorchScript, and exported to ONNX and run by onnxruntime with as
    many threads as torch; medians over ``reps`` runs after two warm-ups (TorchScript optimizes the
    graph during its first runs). Each row also says whether the exported model's detections match
    the eager model's. The exported files are written under ``output_dir``.
    """
    height, width = size
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0)) * 255
    threads = torch.get_num_threads()
    rows = []
    for name in names:
        opts = [] if score_thresh is None else ["MODEL.DSLA.SCORE_THRESH_TEST", str(score_thresh)]
        cfg = benchmark_cfg(EXPORT_CONFIGS[name], "cpu", opts)
        model = build_seeded(cfg).eval()
        expected = eager_detections(model, image)
        row = {
            "model": name,
            "size": f"{height}x{width}",
            "threads": threads,
            "score_thresh": cfg.MODEL.DSLA.SCORE_THRESH_TEST,
            "detections": len(expected["scores"]),
            "eager_s": measure_latency(lambda m=model: eager_detections(m, image), reps, warmup=2),
        }
        for fmt in sorted(FORMATS):
            exported = ExportedModel(
                export_model(model, image, fmt, os.path.join(output_dir, name)), threads
            )
            row[f"{fmt}_s"] = measure_latency(lambda e=exported: e(image), reps, warmup=2)
            row[f"{fmt}_matches_eager"] = compare_detections(expected, exported(image)) is None
        rows.append(row)
        logger.info(json.dumps(row))
    return rows
