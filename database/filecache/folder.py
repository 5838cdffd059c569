"""The cache folder: every file operation stays in it and follows no symbolic link.

Each operation opens the folder once and works relative to that descriptor
(``dir_fd``), so swapping a path for a link mid-way redirects nothing, and
opens entries with ``O_NOFOLLOW``: a ``<key>.cache`` that is a symbolic link,
to a file outside the folder or to another folder, is never read or written
through. Writes go to a new temporary file in the folder (``O_EXCL``), which
then replaces the entry with ``os.replace``: that replaces a link itself, never
its target. Deleting an entry that is a link removes the link, never its
target. The folder itself is where its owner put it, and may be a link.
POSIX only (``dir_fd`` and ``O_NOFOLLOW``).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from database.filecache.limits import PickleLimits, check_file_size

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO can't hang us
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def open_folder(directory: Path, *, create: bool = False) -> Iterator[int]:
    """A descriptor of ``directory`` for the ``*_entry`` functions; OSError if it is missing."""
    if create:
        directory.mkdir(parents=True, exist_ok=True)
    folder = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield folder
    finally:
        os.close(folder)


def _open_entry(folder: int, name: str) -> int:
    try:
        return os.open(name, _READ, dir_fd=folder)
    except OSError as error:
        if error.errno == errno.ELOOP:  # what O_NOFOLLOW says of a link
            raise OSError(errno.ELOOP, "a symbolic link, not followed") from None
        raise


def read_entry(folder: int, name: str, limits: PickleLimits) -> bytes:
    """The bytes of the regular file ``name``; OSError, or PickleLimitError if too large."""
    descriptor = _open_entry(folder, name)
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise OSError(errno.EISDIR, "a directory")
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        check_file_size(info.st_size, limits)
        # Never more than the limit, even if it grows meanwhile; and read(n) reserves n
        # bytes up front, so ask for what the file holds, not for the limit.
        data = file.read(min(info.st_size, limits.max_file_size) + 1)
    check_file_size(len(data), limits)
    return data


def write_entry(folder: int, name: str, payload: bytes) -> None:
    """Replace the entry ``name`` atomically with ``payload`` (a link is replaced, not followed)."""
    temporary = f".{name}.{secrets.token_hex(8)}.tmp"
    descriptor = os.open(temporary, _CREATE, 0o666, dir_fd=folder)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(payload)
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=folder)
        raise


def remove_entry(folder: int, name: str) -> bool:
    """Remove the entry ``name`` (a link itself, never its target); False if there is none."""
    try:
        os.unlink(name, dir_fd=folder)
    except (FileNotFoundError, IsADirectoryError):
        return False
    return True


def entry_names(folder: int, suffix: str) -> list[str]:
    """Every name in the folder ending in ``suffix``, sorted, whatever it is."""
    with os.scandir(folder) as entries:
        return sorted(entry.name for entry in entries if entry.name.endswith(suffix))


def file_sizes(folder: int, suffix: str) -> dict[str, int]:
    """The regular files ending in ``suffix`` (links not followed) and their sizes."""
    with os.scandir(folder) as entries:
        return {
            entry.name: entry.stat(follow_symlinks=False).st_size
            for entry in entries
            if entry.name.endswith(suffix) and entry.is_file(follow_symlinks=False)
        }


def clear_entries(folder: int, suffix: str) -> int:
    """Remove every entry ending in ``suffix`` that is not a directory (links themselves)."""
    with os.scandir(folder) as entries:
        names = [
            entry.name
            for entry in entries
            if entry.name.endswith(suffix) and not entry.is_dir(follow_symlinks=False)
        ]
    return sum(remove_entry(folder, name) for name in names)
