"""
Reading checkpoint files without running code from them.

Unpickling calls whatever the pickle names (``os.system`` included), so a weights file from
elsewhere is read with an unpickler that knows only data:

- ``.pkl`` (detectron2's model zoo, the MSRA/Caffe2 ImageNet files) through
  :class:`RestrictedUnpickler`: dicts, lists, tuples, strings, numbers, sets and numpy arrays;
- every torch file (``.pth``, ``.bin``, resume checkpoints) through
  ``torch.load(weights_only=True)``: tensors, plain containers and numbers;
- ``.safetensors`` holds tensors only.

Anything else stops with :class:`UnsafePickleError`, which names the file, the refused global and
the switch that allows it for a file one trusts (docs/security.md).
"""

import _compat_pickle
import codecs
import collections
import pickle
import re
from typing import IO, Any, Dict

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

__all__ = [
    "RestrictedUnpickler",
    "UnsafePickleError",
    "load_state_dict_file",
    "torch_load",
]


def _numpy_globals() -> Dict[tuple, Any]:
    """numpy's array and scalar reconstruction, under numpy 1's and numpy 2's module names (a file
    names the one of the numpy that wrote it)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 1.26
        from numpy.core import multiarray, numeric
    found = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        found[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        found[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        # Protocol 5 pickles of contiguous arrays.
        found[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return found


# The globals a pickle of plain data needs. Dicts, lists, tuples, strings, numbers and booleans are
# pickle opcodes and need none.
SAFE_GLOBALS: Dict[tuple, Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    # Python 3 writes bytes into protocol 2 pickles (numpy arrays' data) as _codecs.encode(str).
    ("_codecs", "encode"): codecs.encode,
    **_numpy_globals(),
}


class UnsafePickleError(pickle.UnpicklingError):
    """A file that would need code (a global other than plain data) to be unpickled."""

    def __init__(self, path: str, refused: str, switch: str):
        """
        Args:
            path: the file.
            refused: what it needs, e.g. "the global posix.system".
            switch: how a user who trusts the file allows it, e.g. "pass --allow-pickle".
        """
        super().__init__(
            f"Refusing to load {path}: it needs {refused}, and unpickling it could run arbitrary "
            f"code. Load only files you trust; if you trust this one, {switch} (docs/security.md)."
        )
        self.path, self.refused = path, refused


class RestrictedUnpickler(pickle.Unpickler):
    """
    A ``pickle.Unpickler`` that builds plain data only: the globals of :data:`SAFE_GLOBALS`
    (numpy arrays and scalars, ``OrderedDict``, sets, bytes) and no persistent ids. Python 2
    pickles (detectron2's MSRA files) are read with ``encoding="latin1"``, as detectron2 reads them.

    ``RestrictedUnpickler(file, path, switch).load()`` raises :class:`UnsafePickleError` for a
    pickle that needs any other global.
    """

    def __init__(self, file: IO[bytes], path: str, switch: str):
        """
        Args:
            file: the open file (binary).
            path: its name, for the error.
            switch: how a user who trusts the file allows it (for the error).
        """
        super().__init__(file, encoding="latin1")
        self.path, self.switch = path, switch

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__, copy_reg), renamed as pickle's own find_class renames them.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) not in SAFE_GLOBALS:
            raise UnsafePickleError(self.path, f"the global {module}.{name}", self.switch)
        return SAFE_GLOBALS[(module, name)]


def torch_load(path: str, *, allow_pickle: bool = False, switch: str) -> Any:
    """
    ``torch.load`` onto the CPU with ``weights_only=not allow_pickle``: whatever the torch version's
    default, a file from elsewhere runs no code unless the user allows it.

    Args:
        path: a torch file.
        switch: how a user who trusts the file allows it (for the error).

    Raises:
        UnsafePickleError: ``allow_pickle`` is False and the file holds more than tensors, plain
            containers and numbers.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        if allow_pickle:
            raise
        # torch names the global in its message ("Unsupported global: GLOBAL posix.system ..."),
        # or else what it refused ("WeightsUnpickler error: ...").
        m = re.search(r"GLOBAL (\S+)", str(e))
        reason = re.search(r"WeightsUnpickler error: (.*)", str(e))
        if m:
            refused = f"the global {m[1]}"
        else:
            refused = f"more than tensors ({reason[1] if reason else str(e).splitlines()[0]})"
        raise UnsafePickleError(path, refused, switch) from None


def load_state_dict_file(path: str, allow_pickle: bool = False) -> Dict[str, Tensor]:
    """
    The tensors of a checkpoint file written by another framework (mmdetection, the official Swin
    release, timm, torchvision): its ``"state_dict"`` or ``"model"`` entry, or the file itself when
    it is a bare state dict (``.pth``, ``.bin`` or ``.safetensors``), without a DataParallel
    ``module.`` prefix.

    Args:
        allow_pickle: unpickle arbitrary Python objects, for trusted files that hold more than
            tensors (``--allow-pickle`` of the converters).

    Raises:
        UnsafePickleError: without ``allow_pickle``, for a file that holds other objects.
    """
    if path.endswith(".safetensors"):
        return load_file(path)
    checkpoint = torch_load(path, allow_pickle=allow_pickle, switch="run again with --allow-pickle")
    for key in ("state_dict", "model"):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    return {re.sub(r"^module\.", "", k): v for k, v in checkpoint.items()}
