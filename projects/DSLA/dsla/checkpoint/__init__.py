from ..utils.file_io import atomic_write
from .atomic import AtomicCheckpointer
from .convert_mmdet import Conversion, convert_mmdet_state_dict
from .io import load_state_dict_file

__all__ = [
    "AtomicCheckpointer",
    "Conversion",
    "atomic_write",
    "convert_mmdet_state_dict",
    "load_state_dict_file",
]
