from .convert_mmdet import Conversion, convert_mmdet_state_dict

__all__ = ["Conversion", "convert_mmdet_state_dict"]
