from .file_io import atomic_write, atomic_write_text, pip_download, sha256_file, unpack_checked
from .precision import check_cpu_bfloat16, cpu_has_bfloat16, inference_autocast

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "check_cpu_bfloat16",
    "cpu_has_bfloat16",
    "inference_autocast",
    "pip_download",
    "sha256_file",
    "unpack_checked",
]
