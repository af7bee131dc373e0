"""
Wall time and peak extra memory of a block of code, and the one measuring loop of the benchmark:
several candidates alternating within each repetition, after warm-ups.

Peak memory is CUDA's ``max_memory_allocated`` on GPUs; on the CPU, the process's peak resident
memory (``VmHWM``, reset before each run through ``/proc/self/clear_refs``) minus its resident
memory before the run.
"""

import statistics
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, List

import torch

__all__ = ["alternate", "measure", "measure_call", "median", "synchronize"]


def _proc_status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def synchronize(device: str) -> None:
    """Waits for the work queued on ``device`` (a no-op on the CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


@contextmanager
def measure(device: str, result: Dict[str, float]):
    """Wall time (seconds) and peak extra memory (MB) of the block, stored into ``result``."""
    synchronize(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _proc_status_kb("VmRSS") * 1024
    start = time.perf_counter()
    yield
    synchronize(device)
    result["seconds"] = time.perf_counter() - start
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _proc_status_kb("VmHWM") * 1024
    result["peak_mb"] = max(peak - base, 0) / 2**20


def median(runs: List[Dict[str, float]], key: str) -> float:
    """The median of ``key`` ("seconds" or "peak_mb") over the results of :func:`measure`."""
    return statistics.median(r[key] for r in runs)


def measure_call(device: str, fn: Callable, *args, **kwargs) -> Dict[str, float]:
    """``fn(*args, **kwargs)`` inside :func:`measure`: its {"seconds", "peak_mb"}."""
    result = {}
    with measure(device, result):
        fn(*args, **kwargs)
    return result


def alternate(fns: Dict[str, Callable[[], Any]], reps: int, warmup: int = 1) -> Dict[str, Dict]:
    """
    Runs each of ``fns`` (name -> fn(), which returns its measurement, e.g. a
    :func:`measure_call`) ``warmup + reps`` times, alternating the names within each repetition so
    that a slower or busier phase of the machine hits them alike.

    Returns:
        name -> {"runs": [what fn() returned in each of the ``reps`` runs after the warm-ups],
        "first": what it returned in the first run}
    """
    out = {name: {"runs": []} for name in fns}
    for rep in range(warmup + reps):
        for name, fn in fns.items():
            result = fn()
            if rep == 0:
                out[name]["first"] = result
            if rep >= warmup:
                out[name]["runs"].append(result)
    return out
