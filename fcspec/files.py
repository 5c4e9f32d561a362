"""Reading files safely, without NumPy: regular files only, and never more than a limit.

`fcspec check` reads a spec through here, so this module imports only the standard
library (`fcspec/io.py`, which imports NumPy for the arrays it writes, builds on it).
"""

from __future__ import annotations

import os
import stat

from .errors import DataError

PathLike = str | os.PathLike


_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def file_problem(path: PathLike) -> str | None:
    """Why `path` cannot be read as a regular file (symlinks followed), or None if it can.

    Judged by `os.stat`, without opening: opening a FIFO blocks until someone
    writes to it, and a device such as /dev/zero reports size 0 but never ends.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except OSError as e:
        return f"cannot read it: {e.strerror or e}"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        return f"not a file but {kind}; fcspec reads regular files only"
    return None


def regular_file(path: PathLike, what: str | None = None) -> None:
    """Refuse (`DataError`) anything but an existing regular file: every path fcspec
    reads, from the command line or from a spec, passes here first.  `what` names
    the file's role in messages ("weights", "checkpoint", ...)."""
    problem = file_problem(path)
    if problem is None:
        return
    if problem == "no such file" and what:
        raise DataError(f"{what} file not found: {path}")
    raise DataError(f"{what} file {path}: {problem}" if what else f"{path}: {problem}")


def read_limited(f, limit: int | None) -> bytes:
    """At most `limit + 1` bytes of the open file `f` (all of it for None): the size
    `stat` reports is not trusted, as a file can grow while it is read."""
    return f.read() if limit is None else f.read(limit + 1)


def read_bytes(path: PathLike, what: str | None = None, limit: int | None = None) -> bytes:
    """The bytes of the regular file `path`, refusing more than `limit` of them."""
    regular_file(path, what)
    label = f"{what} file {path}" if what else str(path)
    try:
        with open(path, "rb") as f:
            data = read_limited(f, limit)
    except OSError as e:
        raise DataError(f"{label}: cannot read it: {e.strerror or e}") from None
    if limit is not None and len(data) > limit:
        raise DataError(f"{label}: larger than {limit:,} bytes, the most fcspec reads for it")
    return data
