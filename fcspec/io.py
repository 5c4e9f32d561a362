"""Crash-safe files: every artifact fcspec writes goes through here.

A run can be killed at any instant (SIGKILL, power loss, a full disk).  Each
write therefore goes to a temporary file in the destination's folder, is
flushed and fsync'ed, and replaces the destination with `os.replace` (atomic on
POSIX and Windows); the folder is then fsync'ed so the rename itself survives a
crash.  A reader sees either the old file or the new one, never half of one.

Reading `.npz` files lives here too, so every broken or hostile archive
(truncated, not a zip, pickled objects) becomes a `DataError` naming the file.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

PathLike = str | os.PathLike

# Whether writes are fsync'ed.  Off only inside `scratch()`: files of a throwaway
# folder (a scikit-learn fit's temporary run) need not survive a power cut, and
# the syncs were most of the time of a small fit.  Still atomic either way.
_SYNC = contextvars.ContextVar("fcspec_io_sync", default=True)


@contextlib.contextmanager
def scratch() -> Iterator[None]:
    """Within this block, writes stay atomic but are not fsync'ed (this thread only)."""
    token = _SYNC.set(False)
    try:
        yield
    finally:
        _SYNC.reset(token)


def _fsync_dir(folder: Path) -> None:
    # Without this the rename may be lost on a crash even though the data was synced.
    if os.name != "posix" or not _SYNC.get():
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (e.g. certain network mounts) refuse fsync on a folder
    finally:
        os.close(fd)


def _file_mode() -> int:
    # What open() would give a new file: 0o666 less the umask (read without changing it for good).
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def temp_beside(path: PathLike, suffix: str = ".tmp") -> tuple[int, str]:
    """A new temporary file in `path`'s folder, with the permissions a plain new file gets.

    Same folder: os.replace is only atomic within one file system.  mkstemp makes files
    0600, and os.replace keeps that, so the outputs would be unreadable to anyone else
    (a server loading the .onnx, a colleague reading metrics): set the usual mode.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=folder)
    if os.name == "posix":
        os.fchmod(fd, _file_mode())
    return fd, tmp


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Replace `path` with `data` atomically (the folder must exist)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if _SYNC.get():
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Also on KeyboardInterrupt: never leave a stray temporary behind.
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_jsonl(path: PathLike, rows: list[Mapping[str, Any]]) -> None:
    """Rewrite a whole JSON-lines file: resume-safe, unlike appending."""
    atomic_write_text(path, "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in rows))


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The bytes of an uncompressed `.npz` holding `arrays` (keys kept as given)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def save_npz(path: PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write `arrays` to `path` as `.npz`, atomically."""
    for k, v in arrays.items():
        if np.asarray(v).dtype == object:
            # would need pickle to load back, which load_npz refuses
            raise TypeError(f"save_npz: {k!r} is an object array")
    atomic_write_bytes(path, npz_bytes(arrays))


def load_npz(path: PathLike, what: str = "file") -> dict[str, np.ndarray]:
    """Every array of an `.npz` file, fully read; any failure is a `DataError`.

    `what` names the file's role in messages ("weights", "checkpoint", ...).
    Pickled object arrays are refused (`allow_pickle=False`): an `.npz` from
    elsewhere must not be able to run code.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} file not found: {path}")
    if path.is_dir():
        raise DataError(f"{what} path is a folder, not an .npz file: {path}")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        # Check the zip magic ourselves: for any other bytes np.load would try
        # pickle and complain about "pickled data", which misleads the user.
        if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise DataError(f"{what} file {path} is not an .npz archive")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except DataError:
        raise
    except ValueError as e:
        # numpy raises ValueError for object arrays when pickle is disallowed
        raise DataError(f"cannot read {what} file {path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - BadZipFile, EOFError, zlib.error, OSError...: all "broken"
        raise DataError(
            f"cannot read {what} file {path}: not a valid .npz archive ({type(e).__name__}: {e})"
        ) from None


# ---------------------------------------------------------------------------
# Weights: `.npz` or `.safetensors` (PyTorch's `safetensors.torch.save_file(model.state_dict())`).
# safetensors is read and written through its NumPy API: no torch, and no pickle either way.

INTEROP_HINT = "pip install -e '.[interop]'  (or: pip install safetensors)"


def _safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError:
        return None
    return safetensors.numpy


def has_safetensors() -> bool:
    return _safetensors_numpy() is not None


def load_weights_file(path: PathLike, what: str = "weights") -> dict[str, np.ndarray]:
    """Named arrays from a `.npz` or a `.safetensors` file; any failure is a `DataError`."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return load_npz(path, what)
    st = _safetensors_numpy()
    if st is None:
        raise DataError(f"reading {path} needs the safetensors package", hint=INTEROP_HINT)
    if not path.exists():
        raise DataError(f"{what} file not found: {path}")
    if path.is_dir():
        raise DataError(f"{what} path is a folder, not a .safetensors file: {path}")
    try:
        return dict(st.load(path.read_bytes()))
    except Exception as e:  # noqa: BLE001 - SafetensorError, a dtype NumPy lacks (bf16), ...
        raise DataError(
            f"cannot read {what} file {path}: not a valid .safetensors file ({type(e).__name__}: {e})"
        ) from None


def save_weights(folder: PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """`weights.npz`, and `weights.safetensors` when the safetensors package is installed
    (the `interop` extra), both atomically."""
    folder = Path(folder)
    save_npz(folder / "weights.npz", arrays)
    st = _safetensors_numpy()
    if st is not None:
        blob = st.save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, {"format": "pt"})
        atomic_write_bytes(folder / "weights.safetensors", blob)
