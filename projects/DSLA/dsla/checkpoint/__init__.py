from ..utils.file_io import atomic_write
from .atomic import AtomicCheckpointer
from .convert_mmdet import Conversion, convert_mmdet_state_dict
from .io import UnsafePickleError, load_state_dict_file
from .predictor import Predictor

__all__ = [
    "AtomicCheckpointer",
    "Conversion",
    "Predictor",
    "UnsafePickleError",
    "atomic_write",
    "convert_mmdet_state_dict",
    "load_state_dict_file",
]
