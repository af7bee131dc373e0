import pickle
import re
from typing import Dict

import torch
from safetensors.torch import load_file
from torch import Tensor

__all__ = ["load_state_dict_file"]


def load_state_dict_file(path: str, allow_pickle: bool = False) -> Dict[str, Tensor]:
    """
    The tensors of a checkpoint file written by another framework (mmdetection, the official Swin
    release, timm): its ``"state_dict"`` or ``"model"`` entry, or the file itself when it is a bare
    state dict (``.pth``, ``.bin`` or ``.safetensors``), without a DataParallel ``module.`` prefix.

    Args:
        allow_pickle: unpickle arbitrary Python objects, for trusted files that hold more than
            tensors.
    """
    if path.endswith(".safetensors"):
        return load_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        raise RuntimeError(
            f"{path} holds objects other than tensors and plain containers. If you trust the file, "
            "run again "
            f"with --allow-pickle."
        ) from e
    for key in ("state_dict", "model"):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    return {re.sub(r"^module\.", "", k): v for k, v in checkpoint.items()}
