from .atomic import AtomicCheckpointer, atomic_write
from .convert_mmdet import Conversion, convert_mmdet_state_dict

__all__ = ["AtomicCheckpointer", "Conversion", "atomic_write", "convert_mmdet_state_dict"]
