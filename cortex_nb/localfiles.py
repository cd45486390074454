"""Files on the user's disk, read and kept the careful way: what profiles, cassettes and the
result cache share.

- ``open_regular_file`` opens a file only if it is a regular file: it is opened non-blocking
  and checked with ``fstat`` before a byte is read, so a FIFO or a device (a link to
  ``/dev/zero``) is one clear ``ConfigurationError``, never a hang and never memory without
  bound; ``read_regular_file`` also refuses one larger than a limit. ``follow_links=False``
  refuses a symbolic link as well.
- ``open_for_writing`` creates or replaces a regular file without following a symbolic link
  planted at its name and without blocking on a FIFO; the file is truncated only once it is
  known to be a regular file.
- ``private_directory`` creates a directory 0700, and tightens one of ours that others can
  enter (never a shared one such as ``/tmp``, whose sticky bit says it is meant to be shared).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import IO

from cortex_nb.exceptions import ConfigurationError

__all__ = [
    "kind_of", "open_for_writing", "open_regular_file", "private_directory", "read_regular_file",
]

PRIVATE_DIR_MODE = 0o700
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_KINDS = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"),
)


def kind_of(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words (``a FIFO (named pipe)``)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular_file(
    path: Path, *, what: str, fix: str, follow_links: bool = True
) -> IO[bytes]:
    """``path`` opened for reading if it is a regular file (checked before a byte is read).

    Anything else is a ``ConfigurationError`` saying ``what`` (``The profiles file``) is wrong
    and ``fix``; a missing file raises ``FileNotFoundError``, other failures ``OSError``.
    """
    fd = _open(path, os.O_RDONLY | (0 if follow_links else _NOFOLLOW), what, fix)
    handle = os.fdopen(fd, "rb")
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        handle.close()
        raise ConfigurationError(f"{what} {path} is {kind_of(mode)}, not a file; {fix}")
    os.set_blocking(fd, True)
    return handle


def read_regular_file(
    path: Path, *, what: str, limit: int, fix: str, follow_links: bool = True
) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes (else as
    ``open_regular_file``, and a ``ConfigurationError`` for a larger file)."""
    with open_regular_file(path, what=what, fix=fix, follow_links=follow_links) as handle:
        size = os.fstat(handle.fileno()).st_size
        data = handle.read(limit + 1) if size <= limit else b""  # it may grow meanwhile
    if size > limit or len(data) > limit:
        raise ConfigurationError(
            f"{what} {path} is larger than {limit:,} bytes, too large to be one; {fix}"
        )
    return data


def open_for_writing(path: Path, *, what: str, fix: str) -> IO[str]:
    """``path`` opened to be written from its start (created 0666 less the umask), as text.

    A symbolic link at ``path`` is refused (writing would replace what it points to), and so
    is anything that is not a regular file; ``OSError`` for other failures.
    """
    fd = _open(path, os.O_WRONLY | os.O_CREAT | _NOFOLLOW, what, fix, mode=0o666)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigurationError(f"{what} {path} is {kind_of(info.st_mode)}, not a file; {fix}")
        os.ftruncate(fd, 0)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "w", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


def _open(path: Path, flags: int, what: str, fix: str, mode: int = 0o600) -> int:
    """``os.open`` without blocking on a FIFO; a link refused by ``O_NOFOLLOW`` said plainly."""
    try:
        return os.open(path, flags | _NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            raise ConfigurationError(
                f"{what} {path} is a symbolic link (to {os.readlink(path)}); it is not followed "
                f"here. {fix}"
            ) from None
        if exc.errno == errno.ENXIO:  # a FIFO that no one reads: writing would block forever
            raise ConfigurationError(
                f"{what} {path} is a FIFO (named pipe), not a file; {fix}"
            ) from None
        raise


def private_directory(path: Path) -> int | None:
    """Create ``path`` (0700) if missing; tighten it to 0700 if it is ours and others can enter.

    Returns the mode it had when it was tightened, else None. A directory that is not ours,
    or one marked as shared (sticky, like ``/tmp``), is left as it is.
    """
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if not hasattr(os, "geteuid"):  # Windows: access is not in the mode bits
        return None
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077 or mode & stat.S_ISVTX or info.st_uid != os.geteuid():
        return None
    os.chmod(path, PRIVATE_DIR_MODE)
    return mode
