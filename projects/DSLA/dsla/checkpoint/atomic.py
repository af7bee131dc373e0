"""
Checkpoints that survive a crash: each file is written beside its destination under a temporary
name, synced to disk and then renamed over the destination, so a process killed at any moment leaves
either the old file or the new one, never a truncated checkpoint or a ``last_checkpoint`` that names
one.
"""

import os
import uuid
from typing import IO, Any, Callable

import torch

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["AtomicCheckpointer", "atomic_write"]


def atomic_write(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """
    Write a file so that ``path`` holds either its previous content or the complete new one.

    Args:
        path: the destination, on a local file system.
        write: called with a binary file object open for writing; writes the whole content.
    """
    directory, basename = os.path.split(os.path.abspath(path))
    # The same directory keeps the rename on one file system, where os.replace is atomic. os.open
    # with mode 0o666 gives the file the permissions the umask allows, as open() would; tempfile
    # would make it 0o600.
    tmp_path = os.path.join(directory, f".{basename}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable across a power loss (POSIX needs the directory synced
    too)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # platforms that cannot open a directory (Windows) have no such requirement
    try:
        os.fsync(fd)
    except OSError:
        # Some file systems (network mounts) refuse fsync on directories; the rename stays atomic.
        pass
    finally:
        os.close(fd)


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
