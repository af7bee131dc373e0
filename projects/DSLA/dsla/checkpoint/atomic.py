"""
The project's checkpointer, used wherever a model loads weights or a training saves them:

- checkpoints that survive a crash: each file is written beside its destination under a temporary
  name, synced to disk and then renamed over the destination, so a process killed at any moment
  leaves either the old file or the new one, never a truncated checkpoint or a ``last_checkpoint``
  that names one;
- weights files that run no code: ``.pkl`` files are unpickled as plain data (numpy arrays in dicts,
  what detectron2's model zoo and the MSRA ImageNet files hold), torch files with
  ``weights_only=True``, unless the user says the file is trusted (docs/security.md).
"""

import os
from typing import Any, Dict

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from ..utils.file_io import atomic_write
from .io import RestrictedUnpickler, torch_load

__all__ = ["AtomicCheckpointer"]

# What the error of a refused file tells the user to do, if they trust it.
ALLOW_PICKLE_SWITCH = (
    "add MODEL.WEIGHTS_ALLOW_PICKLE True to the command line (LazyConfig: "
    "train.init_checkpoint_allow_pickle=True)"
)


class AtomicCheckpointer(DetectionCheckpointer):
    """
    detectron2's :class:`DetectionCheckpointer` that

    - loads a file as plain data: ``.pkl`` through :class:`~dsla.checkpoint.io.RestrictedUnpickler`,
      torch files (``.pth``, ``.pyth``, resume checkpoints) with ``torch.load(weights_only=True)``;
      a file that needs any other Python object raises
      :class:`~dsla.checkpoint.io.UnsafePickleError`, unless ``allow_pickle``;
    - writes atomically in :meth:`save` and :meth:`tag_last_checkpoint` (see :func:`atomic_write`),
      so that ``resume_or_load(resume=True)`` after a crash finds the last complete checkpoint.
      Paths that are not on a local file system (other ``PathManager`` handlers) are written as
      detectron2 does.
    """

    def __init__(self, model, save_dir: str = "", *, allow_pickle: bool = False, **kwargs: Any):
        """
        Args:
            model, save_dir, kwargs: as for :class:`DetectionCheckpointer`.
            allow_pickle: unpickle the files it loads as detectron2 does, running whatever code
                they name; only for files the user trusts (``MODEL.WEIGHTS_ALLOW_PICKLE``,
                ``train.init_checkpoint_allow_pickle``).
        """
        super().__init__(model, save_dir, **kwargs)
        self.allow_pickle = allow_pickle

    def _load_file(self, filename: str) -> Dict[str, Any]:
        # detectron2 unpickles .pkl files with pickle.load and .pyth files with torch.load's
        # default (weights_only=False before torch 2.6): both are read here as data instead, then
        # turned into a checkpoint as detectron2 does. Other files reach _torch_load.
        if self.allow_pickle or not filename.endswith((".pkl", ".pyth")):
            return super()._load_file(filename)
        if filename.endswith(".pkl"):
            with PathManager.open(filename, "rb") as f:
                data = RestrictedUnpickler(f, filename, ALLOW_PICKLE_SWITCH).load()
            return self._pickled_checkpoint(data, filename)
        data = self._torch_load(filename)
        if "model_state" not in data:
            raise ValueError(
                f"Cannot load .pyth file {filename}: pycls checkpoints hold model_state"
            )
        model_state = {
            k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")
        }
        return {"model": model_state, "__author__": "pycls", "matching_heuristics": True}

    def _pickled_checkpoint(self, data: Any, filename: str) -> Dict[str, Any]:
        """A checkpoint from the data of a ``.pkl``: detectron2's model zoo format as it is, a
        Caffe2/Detectron1 file (``blobs``, or the bare weights) for name matching."""
        if not isinstance(data, dict):
            raise ValueError(f"{filename} holds a {type(data).__name__}, not a dict of weights")
        if "model" in data and "__author__" in data:
            self.logger.info(f"Reading a file from '{data['__author__']}'")
            return data
        # Detection models have "blobs", ImageNet models do not.
        data = data.get("blobs", data)
        data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}

    def _torch_load(self, f: str) -> Any:
        return torch_load(f, allow_pickle=self.allow_pickle, switch=ALLOW_PICKLE_SWITCH)

    def save(self, name: str, **kwargs: Any) -> None:
        if not self._writes_locally():
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)

        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._writes_locally():
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode()),
        )

    def _writes_locally(self) -> bool:
        return bool(self.save_dir) and self.save_to_disk and os.path.isdir(self.save_dir)
