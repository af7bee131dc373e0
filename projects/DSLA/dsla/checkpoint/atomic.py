"""
Checkpoints that survive a crash: each file is written beside its destination under a temporary
name, synced to disk and then renamed over the destination, so a process killed at any moment leaves
either the old file or the new one, never a truncated checkpoint or a ``last_checkpoint`` that names
one.
"""

import os
from typing import Any

import torch

from detectron2.checkpoint import DetectionCheckpointer

from ..utils.file_io import atomic_write

__all__ = ["AtomicCheckpointer"]


class AtomicCheckpointer(DetectionCheckpointer):
    """
    detectron2's :class:`DetectionCheckpointer` whose :meth:`save` and :meth:`tag_last_checkpoint`
    write atomically (see :func:`atomic_write`), so that ``resume_or_load(resume=True)`` after a
    crash finds the last complete checkpoint. Paths that are not on a local file system (other
    ``PathManager`` handlers) are written as detectron2 does.
    """

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
