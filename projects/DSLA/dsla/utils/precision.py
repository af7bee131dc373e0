"""
Reduced precision on the CPU: whether it has the bfloat16 matrix instructions that oneDNN uses under
CPU autocast, and autocast for inference (``TEST.AMP.ENABLED``) on the CPU and on CUDA.
"""

import contextlib
import platform

import torch

__all__ = ["check_cpu_bfloat16", "cpu_has_bfloat16", "cpu_name", "inference_autocast"]


def cpu_has_bfloat16() -> bool:
    """
    Whether this CPU has the bfloat16 matrix instructions that oneDNN uses under CPU autocast:
    AVX512-BF16 or AMX on x86, BF16 on Arm (``lscpu``: ``avx512_bf16``, ``amx_bf16``, ``bf16``).

    oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is the Arm answer, but on
    x86 it also accepts AVX-512 CPUs without these instructions, where bfloat16 is emulated and
    brings no speed-up; hence the instruction check there.
    """
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    if platform.machine().lower() in ("x86_64", "amd64"):
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return True


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check_cpu_bfloat16() -> None:
    """Raise a RuntimeError, naming the CPU and the option, if it cannot train in bfloat16."""
    if not cpu_has_bfloat16():
        raise RuntimeError(
            "SOLVER.AMP.ENABLED (LazyConfig: train.amp.enabled) trains in bfloat16 on the CPU, but "
            f"this CPU ({cpu_name()}) has no bfloat16 matrix instructions (AVX512-BF16 or AMX on "
            "x86, BF16 on Arm; `lscpu` lists them as avx512_bf16, amx_bf16 or bf16), or PyTorch "
            "was built without oneDNN. Without them bfloat16 is emulated and no faster than "
            "float32: train with the option off (False), or on a GPU."
        )


def inference_autocast(enabled: bool, device: str):
    """
    The context of a model's inference with ``TEST.AMP.ENABLED``: bfloat16 autocast on the CPU
    (refused without bfloat16 instructions, :func:`check_cpu_bfloat16`), float16 on CUDA; without
    ``enabled``, nothing.
    """
    if not enabled:
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    if device_type == "cpu":
        check_cpu_bfloat16()
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast(device_type, dtype=torch.float16)
