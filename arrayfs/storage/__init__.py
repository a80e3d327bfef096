"""Byte sources: where a file's bytes live (local files, fsspec URLs); nothing about Riegeli."""

from .urls import StorageError, filesystem, is_remote, local_path, scheme

__all__ = ["StorageError", "filesystem", "is_remote", "local_path", "scheme"]
