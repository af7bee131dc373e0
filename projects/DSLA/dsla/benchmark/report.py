"""The benchmark's report: the JSON it writes, and its rows as text tables."""

import os
from typing import Dict, List, Sequence

import torch

from .detectors import PROFILE_STAGES
from .gpu import STEP_STAGES

__all__ = ["COLUMNS", "SPEED_COLUMNS", "format_report", "format_table", "new_report"]

# The columns printed of each part's rows (all of their fields are in the JSON).
COLUMNS = {
    "models": (
        "device size batch mode DSLA_s FCOS_s DSLA/FCOS_time DSLA_peak_mb FCOS_peak_mb".split()
    ),
    "assignment": "device size num_points num_boxes seconds peak_mb".split(),
    "profile": [
        "device",
        "size",
        "batch",
        "train_step_s",
        *[f"{s}_pct" for s in PROFILE_STAGES if s != "post-processing"],
        "post-processing_s",
    ],
    "export": (
        "model size threads detections eager_s torchscript_s onnx_s torchscript_matches_eager "
        "onnx_matches_eager"
    ).split(),
    "amp": (
        "device size batch mode amp DSLA_s FCOS_s DSLA/FCOS_time DSLA_peak_mb FCOS_peak_mb".split()
    ),
    "step": [
        "device",
        "size",
        "batch",
        "step_s",
        *[f"{s}_pct" for s in STEP_STAGES],
        "syncs_loss_path",
        "sync_cost_pct",
    ],
}
# The speed part's tables, one per kind of its rows (their "part").
SPEED_COLUMNS = {
    "train": (
        "config size batch variant median_s min_s speedup speedup_min first_s first_loss"
    ).split(),
    "inference": "config size variant median_s min_s speedup speedup_min detections".split(),
    "loader": "config variant workers threads iter_s min_iter_s data_s speedup".split(),
}


def new_report() -> Dict:
    """The report before any part ran: the machine, and an empty list of rows per part."""
    return {
        "machine": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        **{part: [] for part in COLUMNS},
    }


def format_table(rows: List[Dict], columns: Sequence[str]) -> str:
    """``columns`` of ``rows`` as a text table, floats with three decimals."""

    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in columns]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(fmt(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


def format_report(report: Dict) -> str:
    """The tables of the parts that ran, in the order of ``COLUMNS``, then the speed part's."""
    blocks = [
        format_table(report[part], columns) for part, columns in COLUMNS.items() if report[part]
    ]
    if "speed" in report:
        speed = report["speed"]
        blocks.append(f"CPU speed options on {speed['cpu']}, {speed['threads']} threads")
        for part, columns in SPEED_COLUMNS.items():
            rows = [r for r in speed["rows"] if r["part"] == part]
            if rows:
                blocks.append(format_table(rows, columns))
    return "\n".join(blocks)
