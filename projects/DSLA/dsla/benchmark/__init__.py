"""
Speed and memory of DSLA against detectron2's FCOS on the same backbone, and of the DSLA label
assignment (``tools/benchmark.py``, ``make benchmark``, ``docs/benchmarks.md``). The parts, each a
list of rows (printed as a table by :func:`format_report`):

1. ``models`` (:func:`benchmark_models`): training step (forward + backward) and inference of DSLA
   R-50-FPN and FCOS R-50-FPN (``configs/DSLA/dsla_R_50_FPN_1x.yaml``,
   ``configs/FCOS-Baseline/fcos_R_50_FPN_1x.yaml``, random weights) on the same inputs, alternating
   DSLA and FCOS runs; medians over the timed runs after one warm-up, and the peak memory each run
   adds.
2. ``assignment`` (:func:`benchmark_assignment`): time and peak extra memory of the R-50 head's
   ``label_points`` on the points of one image against the number of ground-truth boxes, each
   measured in a fresh process.
3. ``profile`` (:func:`profile_dsla_step`): where a DSLA training step spends its time: backbone,
   head, label assignment, losses, backward, and inference post-processing.
4. ``export`` (:func:`benchmark_export`): CPU latency of one image through the quick-start and the
   R-50 model (random weights), eager, traced to TorchScript, and exported to ONNX and run by
   onnxruntime, and whether the exported model's detections match the eager model's.
5. ``speed`` (:func:`benchmark_speed`): the CPU speed options (bfloat16 autocast, channels_last,
   torch.compile, loader workers) side by side in one process, against fp32 eager.
6. ``amp`` and ``step`` (:func:`benchmark_amp`, :func:`profile_training_step`), the GPU check's
   (``docs/gpu.md``): DSLA against FCOS under autocast, and a training step with its optimizer
   update stage by stage, with its host-device synchronizations on CUDA.

Candidates compared (models, variants) alternate within each repetition (:func:`alternate`). Peak
memory is CUDA's ``max_memory_allocated`` on GPUs; on the CPU, the process's peak resident memory
(``VmHWM``, reset before each run through ``/proc/self/clear_refs``) minus its resident memory
before the run (:func:`measure`).
"""

from .deployment import EXPORT_CONFIGS, benchmark_export
from .detectors import (
    PROFILE_STAGES,
    benchmark_assignment,
    benchmark_models,
    compare_detectors,
    inference,
    profile_dsla_step,
    train_step,
)
from .gpu import (
    AMP_DTYPES,
    STEP_STAGES,
    amp_inference,
    amp_train_step,
    autocast,
    benchmark_amp,
    float32_losses,
    gpu_busy_seconds,
    host_sync_calls,
    profile_training_step,
    recording_syncs,
    sync_sites,
)
from .inputs import CONFIGS, benchmark_cfg, build, build_seeded, make_batch, random_instances
from .measure import alternate, measure, measure_call, median, synchronize
from .report import COLUMNS, SPEED_COLUMNS, format_report, format_table, new_report
from .speed import (
    SPEED_INFERENCE_CONFIG,
    SPEED_LOADER_STEPS,
    SPEED_PARTS,
    SPEED_TRAIN_CONFIGS,
    SPEED_VARIANTS,
    benchmark_speed,
    speed_inference,
    speed_loader,
    speed_train_step,
)

__all__ = [
    "AMP_DTYPES",
    "COLUMNS",
    "CONFIGS",
    "EXPORT_CONFIGS",
    "PROFILE_STAGES",
    "SPEED_COLUMNS",
    "SPEED_INFERENCE_CONFIG",
    "SPEED_LOADER_STEPS",
    "SPEED_PARTS",
    "SPEED_TRAIN_CONFIGS",
    "SPEED_VARIANTS",
    "STEP_STAGES",
    "alternate",
    "amp_inference",
    "amp_train_step",
    "autocast",
    "benchmark_amp",
    "benchmark_assignment",
    "benchmark_cfg",
    "benchmark_export",
    "benchmark_models",
    "benchmark_speed",
    "build",
    "build_seeded",
    "compare_detectors",
    "float32_losses",
    "format_report",
    "format_table",
    "gpu_busy_seconds",
    "host_sync_calls",
    "inference",
    "make_batch",
    "measure",
    "measure_call",
    "median",
    "new_report",
    "profile_dsla_step",
    "profile_training_step",
    "random_instances",
    "recording_syncs",
    "speed_inference",
    "speed_loader",
    "speed_train_step",
    "sync_sites",
    "synchronize",
    "train_step",
]
