from .file_io import atomic_write, atomic_write_text, pip_download, sha256_file, unpack_checked

__all__ = ["atomic_write", "atomic_write_text", "pip_download", "sha256_file", "unpack_checked"]
