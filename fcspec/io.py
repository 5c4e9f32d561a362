"""Crash-safe files: every artifact fcspec writes goes through here.

A run can be killed at any instant (SIGKILL, power loss, a full disk).  Each
write therefore goes to a temporary file in the destination's folder, is
flushed and fsync'ed, and replaces the destination with `os.replace` (atomic on
POSIX and Windows); the folder is then fsync'ed so the rename itself survives a
crash.  A reader sees either the old file or the new one, never half of one.

Reading lives here too.  `regular_file` / `read_bytes` are the one gate every
path from the command line or a spec passes: only regular files, so a FIFO
cannot block a command and a device (`/dev/zero`) cannot feed it without end,
and reads are bounded.  `read_npz` is the one `.npz` reader: it parses every
member's header itself, so any broken or hostile archive (truncated, not a zip,
a damaged header, pickled objects, a size it does not hold) becomes a
`DataError` naming the file, and a caller can judge the declared shapes before
a byte of data is read.
"""

from __future__ import annotations

import contextlib
import contextvars
import glob
import io
import json
import math
import os
import stat
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError
from .files import file_problem, read_bytes, read_limited, regular_file  # noqa: F401 - io's API

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


def fsync_dir(folder: Path) -> None:
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


TEMP_SUFFIX = ".tmp"
STALE_SECONDS = 300  # a temporary untouched this long belongs to a killed write, not a live one


def temp_beside(
    path: PathLike, suffix: str = TEMP_SUFFIX, mode: int | None = None
) -> tuple[int, str]:
    """A new temporary file in `path`'s folder, with the permissions a plain new file gets
    (or `mode`).

    Same folder: os.replace is only atomic within one file system.  mkstemp makes files
    0600, and os.replace keeps that, so the outputs would be unreadable to anyone else
    (a server loading the .onnx, a colleague reading metrics): set the usual mode.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=folder)
    if os.name == "posix":
        os.fchmod(fd, _file_mode() if mode is None else mode)
    return fd, tmp


def remove_stale_temps(path: PathLike, max_age: float = STALE_SECONDS) -> list[Path]:
    """Delete the temporaries that killed writes of `path` left behind (older than `max_age`).

    A SIGKILL or a power cut between mkstemp and os.replace leaves `.NAME.XXXXXXXX.tmp`
    beside NAME; nothing else would ever remove it.  Called after every write of NAME.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    pattern = os.path.join(
        glob.escape(str(folder)), glob.escape(f".{path.name}.") + "*" + TEMP_SUFFIX
    )
    removed = []
    now = time.time()
    for tmp in glob.glob(pattern):
        try:
            if now - os.lstat(tmp).st_mtime > max_age:
                os.unlink(tmp)
                removed.append(Path(tmp))
        except OSError:
            pass  # gone already, or not ours to remove
    return removed


def remove_run_temps(folder: PathLike, names) -> None:
    """Delete every temporary of the files `names` in `folder`, whatever its age: for a
    folder this process holds the lock of, no other writer can own one."""
    for name in names:
        remove_stale_temps(Path(folder) / name, max_age=-1)


@contextlib.contextmanager
def folder_lock(folder: PathLike, what: str = "folder"):
    """Hold an exclusive lock on `folder` (its `.fcspec.lock` file) for the `with` body.

    A second holder gets a `DataError` at once (no waiting) naming the process that
    holds it.  The lock is the kernel's (flock): it ends with the process, so a
    killed run never leaves a folder locked.  Without fcntl (Windows) there is none.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = Path(folder) / ".fcspec.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise DataError(
                f"the {what} {folder} is in use by another fcspec run ({holder})",
                hint="wait for it to finish, or give this run its own --out folder",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0
        )
        yield
    finally:
        os.close(fd)  # releases the lock


def atomic_write_bytes(path: PathLike, data: bytes, mode: int | None = None) -> None:
    """Replace `path` with `data` atomically (the folder must exist); `mode`: its permissions."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = temp_beside(path, mode=mode)
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
    fsync_dir(folder)
    remove_stale_temps(path)


def rewrite_file(path: PathLike, data: bytes) -> Path:
    """Give the existing file `path` new contents, as an editor saving it does.

    Through a symlink to the file it names (replacing the link would leave the
    target unchanged), with the file's permission bits (a 0600 file stays
    0600), and, for a file with several hard links, in place so every link sees
    the new text.  The rewrite is atomic, except for hard-linked files: there
    the new contents are first written and fsync'ed to a temporary beside it,
    which stays if the in-place write is cut short.  Returns the real path.
    """
    real = Path(os.path.realpath(path))
    st = os.stat(real)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_nlink <= 1:
        atomic_write_bytes(real, data, mode=mode)
        return real
    fd, tmp = temp_beside(real, mode=mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    with open(real, "r+b") as f:
        f.write(data)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())
    os.unlink(tmp)
    return real


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_jsonl(path: PathLike, rows: list[Mapping[str, Any]]) -> None:
    """Rewrite a whole JSON-lines file: resume-safe, unlike appending."""
    atomic_write_text(path, "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in rows))


def append_jsonl(path: PathLike, row: Mapping[str, Any]) -> None:
    """Append one JSON line to `path` and fsync it: constant cost however long the file.

    A crash mid-append can leave a torn last line; readers drop a last line without
    its newline, and `fcspec run` rewrites the file whole when it resumes.
    """
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(dict(row), sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The bytes of an uncompressed `.npz` holding `arrays` (keys kept as given)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def save_npz(
    path: PathLike, arrays: Mapping[str, np.ndarray], stamp: Mapping[str, Any] | None = None
) -> None:
    """Write `arrays` to `path` as `.npz`, atomically; `stamp` goes into the archive's
    comment as JSON (numpy and torch ignore it, so the keys stay a pure state_dict)."""
    for k, v in arrays.items():
        if np.asarray(v).dtype == object:
            # would need pickle to load back, which load_npz refuses
            raise TypeError(f"save_npz: {k!r} is an object array")
    data = npz_bytes(arrays)
    if stamp is not None:
        buf = io.BytesIO(data)
        with zipfile.ZipFile(buf, "a") as zf:
            zf.comment = json.dumps(dict(stamp), sort_keys=True).encode("utf-8")
        data = buf.getvalue()
    atomic_write_bytes(path, data)


def npz_stamp(path: PathLike) -> dict[str, Any] | None:
    """The JSON record `save_npz` put in the archive's comment, or None (none, or not ours)."""
    try:
        with zipfile.ZipFile(path) as zf:
            stamp = json.loads(zf.comment.decode("utf-8")) if zf.comment else None
    except (OSError, zipfile.BadZipFile, ValueError, RecursionError):
        return None
    return stamp if isinstance(stamp, dict) else None


def weights_stamp(spec) -> dict[str, str]:
    """What weights.npz records of the spec it was trained for (see `load_params`)."""
    return {"spec_name": spec.name, "spec_path": str(spec.path), "spec_sha256": spec.sha256}


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # also through symlinks and hard links
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_overwrite(output: PathLike, inputs: Mapping[str, PathLike | None]) -> None:
    """Refuse to write `output` when it is one of the command's `inputs` ({role: path}).

    Writing a prediction over its data file, an export over the weights or the
    spec, would destroy what the command was given; say so and write nothing.
    """
    out = Path(output)
    for role, p in inputs.items():
        if p is not None and _same_file(out, Path(p)):
            raise DataError(
                f"the output {output} is the {role} {p}: writing it would destroy the {role}",
                hint="choose another output file name",
            )


# ---------------------------------------------------------------------------
# Reading: only regular files, bounded, and .npz headers judged before the data.

Header = tuple[tuple[int, ...], np.dtype]  # (shape, dtype) of one .npz member


def _read_header(f) -> Header:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    return tuple(int(d) for d in shape), dtype


def read_npz(
    path: PathLike,
    what: str | None = None,
    keys: list[str] | None = None,
    *,
    judge: Callable[[dict[str, Header]], None] | None = None,
    headers_only: bool = False,
) -> dict[str, Any]:
    """Arrays `keys` (default: all) of the `.npz` at `path`; any failure is a `DataError`.
    With `headers_only`, the (shape, dtype) headers instead, and no data is read.

    First every wanted member's header is parsed (a flipped byte in it is a clean
    error, not numpy's `tokenize.TokenError`), its declared size is compared with
    what the member holds, and `judge(headers)` may refuse the shapes (wrong for
    the spec, too big for memory) before any data is read.  Keys not in the file
    are left out; callers say which ones they miss.  Pickled object arrays are
    refused (`allow_pickle=False`): an `.npz` from elsewhere must not run code.
    """
    path = Path(path)
    label = f"{what} file {path}" if what else str(path)
    regular_file(path, what)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise DataError(
                f"{label}: this is a single-array .npy file, not an .npz archive "
                "(np.savez writes one)"
            )
        # Check the zip magic ourselves: for other bytes np.load would try pickle and
        # complain about "pickled data", which misleads the user.
        if magic[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise DataError(f"{label}: not a valid .npz file (not a zip archive)")
        with zipfile.ZipFile(path) as zf:
            members = {
                i.filename[: -len(".npy")]: i for i in zf.infolist() if i.filename.endswith(".npy")
            }
            wanted = [k for k in (members if keys is None else keys) if k in members]
            headers: dict[str, Header] = {}
            for k in wanted:
                info = members[k]
                try:
                    with zf.open(info) as f:
                        shape, dtype = _read_header(f)
                        start = f.tell()
                except Exception as e:  # noqa: BLE001 - numpy's header parser raises anything
                    raise DataError(
                        f"{label}: array {k!r} has a damaged header "
                        f"({type(e).__name__}: {str(e) or 'unreadable'})"
                    ) from None
                if dtype.hasobject:
                    raise DataError(
                        f"{label}: array {k!r} cannot be read: it holds Python objects, which "
                        "only pickle can load, and fcspec never unpickles (allow_pickle=False)"
                    )
                if any(d < 0 for d in shape):
                    raise DataError(f"{label}: array {k!r} has a negative dimension {shape}")
                need = math.prod(shape) * dtype.itemsize
                if need > info.file_size - start:
                    raise DataError(
                        f"{label}: array {k!r} announces shape {list(shape)} ({need:,} bytes) "
                        f"but the archive holds {max(0, info.file_size - start):,} bytes for it "
                        "(truncated or damaged)"
                    )
                headers[k] = (shape, dtype)
            if judge is not None:
                judge(headers)
            if headers_only:
                return headers
            out = {}
            for k in wanted:
                try:
                    with zf.open(members[k]) as f:
                        out[k] = np.lib.format.read_array(f, allow_pickle=False)
                except MemoryError:
                    raise
                except Exception as e:  # noqa: BLE001 - a bad CRC, zlib.error, EOFError, ...
                    raise DataError(
                        f"{label}: array {k!r} is corrupt or truncated ({type(e).__name__}: {e})"
                    ) from None
            return out
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{label}: not enough memory to read it") from None
    except Exception as e:  # noqa: BLE001 - BadZipFile, EOFError, zlib.error, OSError...: all "broken"
        raise DataError(
            f"{label}: not a valid .npz file (truncated, or not a zip archive: {e})"
            if isinstance(e, zipfile.BadZipFile)
            else f"{label}: cannot read it: {type(e).__name__}: {e}"
        ) from None


def expect_shapes(
    expected: Mapping[str, tuple[int, ...]], where: str, model: str = "the model"
) -> Callable[[dict[str, Header]], None]:
    """A `read_npz` judge: the arrays named in `expected` have those shapes and hold
    numbers, and the whole file fits in memory, before any of it is read (a 9 MB
    archive may announce 2 GiB of weights)."""

    def judge(headers: dict[str, Header]) -> None:
        from .data import check_memory

        for k, (shape, dtype) in headers.items():
            want = expected.get(k)
            if want is not None and tuple(shape) != tuple(want):
                raise DataError(
                    f"{where}: {k} has shape {list(shape)}, {model} needs {list(want)}",
                    hint="were they trained from another spec?",
                )
            if want is not None and dtype.kind not in "fiu":
                raise DataError(f"{where}: {k} has dtype {dtype}, expected numbers")
        total = sum(math.prod(s) * d.itemsize for s, d in headers.values())
        check_memory(total, where)

    return judge


def load_params(path: PathLike, model, what: str = "weights", spec=None) -> dict[str, np.ndarray]:
    """The parameters of `model` (an `ir.Model`) stored at `path` (`NAME.weight`, `NAME.bias`;
    an `.npz`, or a `.safetensors` file as PyTorch writes it), float32, in
    `model.param_shapes()` order: names, shapes and types are checked from the headers
    before the data is read, and the values must be finite.

    With `spec`, weights that `fcspec run` stamped for another spec (another sha256:
    another file, or this one edited since) are refused: two specs with the same layers
    would otherwise export or evaluate each other's weights without a word.
    """
    safetensors = Path(path).suffix.lower() == ".safetensors"
    stamp = npz_stamp(path) if spec is not None and not safetensors else None
    if stamp is not None and stamp.get("spec_sha256") not in (None, spec.sha256):
        raise DataError(
            f"{what} {path} were trained for spec {stamp.get('spec_name')!r} "
            f"({stamp.get('spec_path')}, sha256 {str(stamp.get('spec_sha256'))[:12]}...), "
            f"not for {spec.path} (sha256 {spec.sha256[:12]}...)",
            hint=f"train this spec first (fcspec run {spec.path}), or pass its weights",
        )
    expected = model.param_shapes()
    where = f"{what} {path}"
    shapes = expect_shapes(expected, where, f"model {model.name}")

    def judge(headers: dict[str, Header]) -> None:
        missing = [k for k in expected if k not in headers]
        extra = sorted(k for k in headers if k not in expected)
        if missing or extra:
            parts = (["missing " + ", ".join(missing)] if missing else []) + (
                ["unexpected " + ", ".join(extra)] if extra else []
            )
            raise DataError(
                f"{where} do not match model {model.name}: " + "; ".join(parts),
                hint="were they trained from another spec?",
            )
        shapes(headers)

    arrays = load_weights_file(path, what, judge=judge)
    out = {}
    for k in expected:
        a = arrays[k].astype(np.float32)
        if not np.isfinite(a).all():
            raise DataError(f"{where}: {k} contains NaN or infinity (did training diverge?)")
        out[k] = a
    return out


def load_npz(
    path: PathLike,
    what: str = "file",
    *,
    judge: Callable[[dict[str, Header]], None] | None = None,
) -> dict[str, np.ndarray]:
    """Every array of an `.npz` file, fully read (see `read_npz`)."""
    return read_npz(path, what, judge=judge)


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


def _safetensors_header(path: Path, what: str) -> dict[str, Header]:
    """The (shape, dtype) of each tensor of a `.safetensors` file, from its JSON header
    alone (8 bytes of little-endian length, then the JSON): the format's own layout, so
    a file announcing gigabytes is judged before a byte of data is read."""
    label = f"{what} file {path}"
    dtypes = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}  # fmt: skip
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n > min(size - 8, 100_000_000):  # the format caps its header at 100 MB
                raise DataError(f"{label}: not a valid .safetensors file (header length {n:,})")
            header = json.loads(f.read(n))
        out: dict[str, Header] = {}
        for k, v in header.items():
            if k == "__metadata__":
                continue
            shape = tuple(int(d) for d in v["shape"])
            if any(d < 0 for d in shape):
                raise ValueError(f"tensor {k!r} has a negative dimension")
            a, b = (int(o) for o in v["data_offsets"])
            dtype = np.dtype(dtypes.get(v["dtype"], "V1"))  # V1: a type NumPy cannot hold
            if dtype.kind != "V" and b - a != math.prod(shape) * dtype.itemsize:
                raise ValueError(f"tensor {k!r} announces {list(shape)} but holds {b - a:,} bytes")
            if not 0 <= a <= b <= size - 8 - n:
                raise ValueError(f"tensor {k!r} lies beyond the end of the file (truncated?)")
            out[k] = (shape, dtype)
        return out
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - bad JSON, wrong types, OSError
        raise DataError(
            f"{label}: not a valid .safetensors file ({type(e).__name__}: {e})"
        ) from None


def weights_shapes(path: PathLike, what: str = "weights") -> dict[str, tuple[int, ...]]:
    """The shape of each array in a `.npz` or `.safetensors` weights file, read from the
    headers only (resolving `input auto` from trained weights must not read them whole)."""
    path = Path(path)
    regular_file(path, what)
    if path.suffix.lower() == ".safetensors":
        return {k: s for k, (s, _) in _safetensors_header(path, what).items()}
    return {k: s for k, (s, _) in read_npz(path, what, headers_only=True).items()}


def load_weights_file(
    path: PathLike,
    what: str = "weights",
    *,
    judge: Callable[[dict[str, Header]], None] | None = None,
) -> dict[str, np.ndarray]:
    """Named arrays from a `.npz` or a `.safetensors` file; any failure is a `DataError`.
    `judge(headers)` may refuse the shapes before any data is read (see `read_npz`)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return load_npz(path, what, judge=judge)
    st = _safetensors_numpy()
    if st is None:
        raise DataError(f"reading {path} needs the safetensors package", hint=INTEROP_HINT)
    if not path.exists():
        raise DataError(f"{what} file not found: {path}")
    regular_file(path, what)
    headers = _safetensors_header(path, what)
    if judge is not None:
        judge(headers)
    try:
        return dict(st.load_file(str(path)))
    except Exception as e:  # noqa: BLE001 - SafetensorError, a dtype NumPy lacks (bf16), ...
        raise DataError(
            f"cannot read {what} file {path}: not a valid .safetensors file ({type(e).__name__}: {e})"
        ) from None


def save_weights(
    folder: PathLike, arrays: Mapping[str, np.ndarray], stamp: Mapping | None = None
) -> None:
    """`weights.npz` (with `stamp`: the spec it was trained for), and `weights.safetensors`
    when the safetensors package is installed (the `interop` extra), both atomically."""
    folder = Path(folder)
    save_npz(folder / "weights.npz", arrays, stamp=stamp)
    st = _safetensors_numpy()
    if st is not None:
        blob = st.save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, {"format": "pt"})
        atomic_write_bytes(folder / "weights.safetensors", blob)


# ---------------------------------------------------------------------------
# labels.json: the class labels a user gave (strings, or numbers other than 0..C-1),
# in the order of the model's outputs.  The Python API writes it into a run folder;
# export bakes it into the graph's metadata, predict maps class ids back through it.

LABELS_FILE = "labels.json"


def save_labels(folder: PathLike, labels: np.ndarray | None) -> None:
    path = Path(folder) / LABELS_FILE
    if labels is None:
        if path.exists():
            path.unlink()  # a stale file of an earlier fit in the same folder
        return
    kind = "str" if labels.dtype.kind in "UO" else labels.dtype.str
    values = [str(v) for v in labels] if kind == "str" else labels.tolist()
    atomic_write_json(path, {"dtype": kind, "labels": values})


def load_labels(folder: PathLike) -> np.ndarray | None:
    """The labels of `folder`'s labels.json (object array for strings), or None."""
    path = Path(folder) / LABELS_FILE
    if not path.exists():
        return None
    try:
        d = json.loads(read_bytes(path, "labels file", limit=64 << 20).decode("utf-8"))
        if d["dtype"] == "str":
            return np.array([str(v) for v in d["labels"]], dtype=object)
        return np.array(d["labels"], dtype=np.dtype(d["dtype"]))
    except DataError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path} is damaged: {e}") from None
