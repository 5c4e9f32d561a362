"""Data: reading what a spec's `data` section names, checking it, preprocessing it.

Owns
- the readers: `.npz`, `.csv` (header row, target column by name), IDX (the
  MNIST format, any element type, gzipped or not, told apart by magic bytes),
  the built-in `mnist(split)` (files found or fetched by `fcspec.mnist`) and the
  embedded `dataset(name)` files in `fcspec/datasets/`;
- `prepare(spec)`: inputs shaped to the model's `input`, targets shaped and
  typed by task (see docs/architecture.md), the validation split and the
  preprocessing fitted on the training split only;
- `Preprocess`: `(x / scale - shift) / divisor` in float32, saved as
  `preprocess.npz` beside the weights and baked into the ONNX graph by the
  exporter in exactly that operation order, so both backends see the same bits;
- every check on user data.  Anything wrong with a file is a `DataError` that
  names the file and the problem; no other exception escapes this module.

Raw loaders return arrays as stored (`load_source`, `load_file`); the checks
and conversions live in `as_inputs` / `as_targets`, so `fcspec predict` and
`fcspec evaluate` apply the same rules as training.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import importlib.resources
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import catalog, ir, kernels
from .catalog import TABULAR_DATASETS, TABULAR_SOURCES
from .describe import format_bytes
from .errors import DataError

MEMINFO = "/proc/meminfo"  # Linux only; elsewhere the memory check is skipped

# ---------------------------------------------------------------------------
# Resource sanity: refuse a file whose arrays cannot fit before reading it,
# rather than letting the kernel's OOM killer end the run without a word.


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes, or None where that is unknown."""
    try:
        with open(MEMINFO, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(nbytes: int, what: str) -> None:
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise DataError(
            f"{what}: loading it needs about {format_bytes(nbytes)} of memory, "
            f"but only {format_bytes(avail)} is available"
        )


def size_before_reading(path: Path, bytes_per_byte: float, what: str) -> None:
    """Refuse a source whose reading would need more memory than there is, judged from
    its size on disk before a byte is read: a text format's parsed values cost many
    times the file (`bytes_per_byte`), and the OOM killer gives no message."""
    check_memory(int(path.stat().st_size * bytes_per_byte), f"{path} ({what})")


# What reading a CSV costs per byte of the file: pyarrow's columns, then the encoded
# matrix.  Measured on MNIST's 110 MB training CSV (benchmarks/load_speed.py): about 1.5
# when its byte-sized columns parse straight to uint8, 3.4 on the fallback that re-reads
# a file whose sample misjudged a column (int64 columns, then narrowed); the worse one,
# rounded up.  For a compressed file it applies to the compressed size, so it
# underestimates there.
CSV_BYTES_PER_BYTE = 4


def _estimate(shape: tuple[int, ...], itemsize: int) -> int:
    # The array as stored plus the float32 copy every consumer makes of it.
    count = math.prod(shape)
    return count * itemsize + count * 4


# ---------------------------------------------------------------------------
# IDX

# The third magic byte names the element type; all are big-endian on disk.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"
MAX_IDX_DIMS = 32  # numpy 1.x's limit (2.x allows 64): no real IDX file comes near it


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    return data if data is not None else b""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an IDX file (gzipped or not), in native byte order."""
    path = Path(path)
    _require_file(path)
    try:
        gz = _is_gzip(path)
        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            magic = _read_exact(f, 4)
            if (
                len(magic) < 4
                or magic[:2] != b"\0\0"
                or magic[2] not in IDX_DTYPES
                or magic[3] == 0
            ):
                raise DataError(
                    f"{path}: not an IDX file (magic bytes {magic.hex() or 'missing'}; "
                    "expected 0000 + a type code 08/09/0b/0c/0d/0e + the number of dimensions)"
                )
            ndim = magic[3]
            if ndim > MAX_IDX_DIMS:  # numpy cannot even build such an array
                raise DataError(
                    f"{path}: the IDX header announces {ndim} dimensions; "
                    f"an array has at most {MAX_IDX_DIMS} (damaged header?)"
                )
            raw_dims = _read_exact(f, 4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header ({ndim} dimensions announced)")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            dtype = np.dtype(IDX_DTYPES[magic[2]])
            nbytes = math.prod(dims) * dtype.itemsize
            check_memory(
                _estimate(dims, dtype.itemsize), f"{path} ({_shape_str(dims)} {dtype.name})"
            )
            body = _read_exact(f, nbytes)
            if len(body) < nbytes:
                raise DataError(
                    f"{path}: truncated: the header announces {_shape_str(dims)} "
                    f"({nbytes} bytes of data) but the file holds only {len(body)}"
                )
            if _read_exact(f, 1):
                raise DataError(
                    f"{path}: more data than the header's {_shape_str(dims)} announces "
                    "(wrong header or two files joined?)"
                )
    except DataError:
        raise
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to read it") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read it: {e.strerror or e}") from None
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _is_idx(path: Path) -> bool:
    try:
        with gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb") as f:
            magic = f.read(4)
    except (OSError, EOFError, zlib.error):
        return False
    return len(magic) == 4 and magic[:2] == b"\0\0" and magic[2] in IDX_DTYPES and magic[3] > 0


# ---------------------------------------------------------------------------
# npz


def read_npz(
    path: str | os.PathLike, x_key: str = "x", y_key: str | None = "y", *, y_required: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Arrays `x_key` and `y_key` of an `.npz` file; y is None when `y_key` is None
    or, with `y_required=False`, absent.  Read by `fcspec.io.read_npz`, which sizes
    them from their headers (against the memory available) before reading."""
    from . import io as fio

    path = Path(path)
    keys = [x_key] + ([y_key] if y_key is not None else [])
    seen: list[str] = []

    def judge(headers: dict) -> None:
        seen.extend(headers)
        for k in keys:
            if k not in headers and (k == x_key or y_required):
                raise DataError(f"{path}: no array named {k!r}; the file holds {_present(path)}")
        for k, (shape, dtype) in headers.items():
            check_memory(
                _estimate(shape, dtype.itemsize),
                f"{path}: array {k!r} ({_shape_str(shape)} {dtype})",
            )

    arrays = fio.read_npz(path, None, keys, judge=judge)
    return arrays[x_key], arrays.get(y_key) if y_key is not None else None


def _present(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy")]
    except (OSError, zipfile.BadZipFile):
        names = []
    return ", ".join(repr(k) for k in names) or "no arrays"


# ---------------------------------------------------------------------------
# CSV as plain numbers (prediction files of numeric models); tables with
# categories, missing cells and class names go through `fcspec.tabular`.


def read_csv(
    path: str | os.PathLike, target: str | int | None = None, **options
) -> tuple[np.ndarray, np.ndarray | None]:
    """Feature matrix (every column but `target`) and target column, float64, of a CSV
    file whose cells are all numbers (missing cells become NaN).  `options` go to
    `tabular.read_csv` (header, delimiter)."""
    from . import tabular

    path = Path(path)
    _require_file(path)
    table = tabular.read_csv(path, **options)
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows after the header")
    features, tname = tabular.select(table, target=target, where=str(path))
    x = _numbers(features, path)
    if tname is None:
        return x, None
    return x, _numbers(table.select([tname]), path)[:, 0]


def _numbers(table, path: Path) -> np.ndarray:
    import pyarrow as pa

    out = np.empty((table.num_rows, table.num_columns), np.float64)
    for j, name in enumerate(table.column_names):
        col = table.column(j)
        t = col.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)):
            cells = col.to_pylist()
            i, cell = next((i, c) for i, c in enumerate(cells) if c is not None and not _number(c))
            raise DataError(
                f"{path}: line {i + 2}, column {name!r}: {str(cell)!r} is not a number",
                hint="a spec reads text columns as categories (csv(...) in the data section); "
                "this reader takes numbers only",
            )
        out[:, j] = col.to_numpy(zero_copy_only=False)
    return out


def _number(cell) -> bool:
    try:
        float(cell)
    except (TypeError, ValueError):
        return False
    return True


# ---------------------------------------------------------------------------
# Sources named in a spec


def _require_file(path: Path) -> None:
    from .io import regular_file

    regular_file(path)  # a FIFO or a device named in a spec would block or never end


def _resolve(p: str | os.PathLike, base_dir: Path) -> Path:
    p = Path(p).expanduser()
    return p if p.is_absolute() else Path(base_dir) / p


@dataclass(frozen=True, slots=True)
class _Raw:
    x: np.ndarray
    y: np.ndarray | None
    x_name: str  # what error messages call the inputs' file
    y_name: str


@contextlib.contextmanager
def _located(src: ir.DataSource | None) -> Iterator[None]:
    """Point a data error at the `.fc` line that named the source."""
    try:
        yield
    except DataError as e:
        if src is None or src.span is None or e.diagnostic.span is not None:
            raise
        raise DataError(e.diagnostic.message, span=src.span, hint=e.diagnostic.hint) from None


# The reader of each data source of the catalog (catalog.SOURCES), by the row's name:
# (the source's options, the spec's folder) -> the raw arrays.
READERS: dict[str, Callable[[dict, Path], _Raw]] = {}


def reads(name: str):
    """Register the decorated function as the reader of the catalog's data source `name`."""

    def register(fn: Callable[[dict, Path], _Raw]) -> Callable[[dict, Path], _Raw]:
        READERS[name] = fn
        return fn

    return register


@reads("npz")
def _npz_source(a: dict, base_dir: Path) -> _Raw:
    path = _resolve(a["path"], base_dir)
    x, y = read_npz(path, a.get("x", "x") or "x", a.get("y", "y"))
    return _Raw(x, y, str(path), str(path))


def _table_source(kind: str) -> Callable[[dict, Path], _Raw]:
    """load_source of a table: features encoded with a schema fitted on every row,
    targets as numbers (class ids for text labels); `prepare` fits on the training rows."""

    def read(a: dict, base_dir: Path) -> _Raw:
        from . import tabular

        src = ir.DataSource(kind, a)
        t = read_table(src, base_dir)
        task = "regression" if t.target is None or _numeric(t.target) else "classification"
        schema = fit_table_schema(src, t, task, None, None)
        x, _ = tabular.encode(schema, t.features, where=t.where, compact=True)
        y = None
        if t.target is not None:
            y = tabular.encode_target(schema, t.target, where=t.where)
        return _Raw(x, y, t.where, f"{t.where} column {t.target_name!r}")

    return read


reads("csv")(_table_source("csv"))
reads("parquet")(_table_source("parquet"))


@reads("idx")
def _idx_source(a: dict, base_dir: Path) -> _Raw:
    images = _resolve(a["images"], base_dir)
    labels = _resolve(a["labels"], base_dir) if a.get("labels") else None
    return _read_idx_pair(images, labels)


@reads("mnist")
def _mnist_source(a: dict, base_dir: Path) -> _Raw:
    from .mnist import mnist_files

    images, labels = mnist_files(a.get("split", "train"))
    return _read_idx_pair(images, labels)


@reads("dataset")
def _dataset_source(a: dict, base_dir: Path) -> _Raw:
    name = a.get("name")
    if name in TABULAR_DATASETS:
        return _table_source("dataset")(a, base_dir)
    if name not in catalog.DATASETS:
        known = ", ".join(repr(n) for n in catalog.DATASETS)
        raise DataError(
            f"dataset {name!r} is not embedded in fcspec; the embedded ones are {known}"
        )
    if name in catalog.PLAYGROUND:
        from .playground import generate

        n, noise = catalog.PLAYGROUND[name]  # the defaults, for an IR built by hand
        if a.get("noise") is not None:
            noise = a["noise"]
        x, y = generate(name, int(a.get("n") or n), float(noise), int(a.get("seed") or 0))
        return _Raw(x, y, f"dataset {name!r}", f"dataset {name!r}")
    res = importlib.resources.files("fcspec.datasets").joinpath(f"{name}.npz")
    with importlib.resources.as_file(res) as path:
        x, y = read_npz(path)
    return _Raw(x, y, f"dataset {name!r}", f"dataset {name!r}")


def _load(src: ir.DataSource, base_dir: Path) -> _Raw:
    reader = READERS.get(src.kind)
    if reader is None:
        raise DataError(
            f"unknown data source kind {src.kind!r} (expected {', '.join(catalog.SOURCES)})"
        )
    return reader(src.args, base_dir)


# ---------------------------------------------------------------------------
# Tables (csv, parquet, tabular embedded sets): read by fcspec.tabular


def is_tabular(src) -> bool:
    return isinstance(src, ir.DataSource) and (
        src.kind in TABULAR_SOURCES
        or (src.kind == "dataset" and src.args.get("name") in TABULAR_DATASETS)
    )


@dataclass(frozen=True)
class Table:
    """A table source as read: feature columns, the target column, where it came from."""

    features: object  # pyarrow.Table
    target: object | None  # pyarrow.ChunkedArray
    target_name: str | None
    where: str
    line_offset: int  # the file line of row 0
    dropped: int  # rows left out because their target cell is missing
    categorical: tuple[str, ...]  # the forced categories, by name


def _numeric(col) -> bool:
    import pyarrow as pa

    t = col.type
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _table_path(src: ir.DataSource, base_dir: Path) -> tuple[Path, str]:
    if src.kind == "dataset":
        name = src.args["name"]
        res = importlib.resources.files("fcspec.datasets").joinpath(TABULAR_DATASETS[name][0])
        return Path(str(res)), f"dataset {name!r}"
    path = _resolve(src.args["path"], base_dir)
    return path, str(path)


def read_table(src: ir.DataSource, base_dir: Path, schema=None, *, progress=None) -> Table:
    """The table a csv / parquet / tabular dataset source names, its columns chosen.

    With a fitted `schema` (a test file, a prediction file), columns are read as the
    schema's kinds: numbers as numbers, categories as raw text."""
    from . import tabular

    a = src.args
    path, where = _table_path(src, base_dir)
    target = a.get("target")
    if src.kind == "dataset" and target is None:
        target = TABULAR_DATASETS[a["name"]][1]
    text_cols: list = list(a.get("categorical") or ())
    number_cols: list = []
    if schema is not None:
        text_cols = [c.name for c in schema.columns if c.kind == "categorical"]
        number_cols = [c.name for c in schema.columns if c.kind == "numeric"]
    header = bool(a.get("header", True))
    if src.kind == "parquet":
        table = tabular.read_parquet(path, text_columns=text_cols if schema is None else ())
    else:
        table = tabular.read_csv(
            path,
            header=header,
            delimiter=a.get("delimiter", "auto") or "auto",
            text_columns=text_cols,
            number_columns=number_cols,
            progress=progress,
        )
    if table.num_rows == 0:
        raise DataError(f"{where}: no data rows" + (" after the header" if header else ""))
    features, tname = tabular.select(
        table, target=target, columns=a.get("columns"), drop=a.get("drop") or (), where=where
    )
    forced = tuple(
        tabular._name(table.column_names, c, where, "categorical")
        for c in (a.get("categorical") or ())
    )
    tcol, dropped = None, 0
    if tname is not None:
        tcol = table.column(tname)
        if tcol.null_count:
            import pyarrow.compute as pc

            keep = pc.is_valid(tcol)
            dropped = tcol.null_count
            features, tcol = features.filter(keep), tcol.filter(keep)
    return Table(features, tcol, tname, where, 2 if header else 1, dropped, forced)


def fit_table_schema(
    src: ir.DataSource, t: Table, task: str, rows, outputs, normalize_target="none"
):
    from . import tabular

    return tabular.fit(
        t.features,
        t.target,
        target_name=t.target_name,
        task=task,
        train_rows=rows,
        categorical=t.categorical,
        missing=src.args.get("missing", "mean"),
        unknown=src.args.get("unknown", "ignore"),
        normalize_target=normalize_target,
        outputs=outputs,
        where=t.where,
        line_offset=t.line_offset,
    )


def _read_idx_pair(images: Path, labels: Path | None) -> _Raw:
    x = read_idx(images)
    if x.ndim < 2:
        raise DataError(
            f"{images}: holds {_shape_str(x.shape)}, one value per sample; an images file has "
            "a sample dimension and at least one more (labels and images swapped?)"
        )
    y = None
    if labels is not None:
        y = read_idx(labels)
        if y.ndim != 1:
            raise DataError(
                f"{labels}: holds {_shape_str(y.shape)}; a labels file holds one value per sample "
                "(labels and images swapped?)"
            )
    return _Raw(x, y, str(images), str(labels))


def load_source(src: ir.DataSource, base_dir: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw (x, y) of one `data` source, as stored; y is None for unlabeled data.
    Paths are relative to `base_dir`, the `.fc` file's folder."""
    with _located(src):
        raw = _load(src, Path(base_dir))
        _check_rows(raw)
    return raw.x, raw.y


def load_file(
    path: str | os.PathLike, *, target: str | None = None, labels: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw (x, y | None) of a data file given on the command line (`fcspec predict`):
    `.npz` with x and optional y, `.csv` with an optional target column, or an IDX
    images file (gzipped or not) with an optional labels file beside it."""
    path = Path(path)
    _require_file(path)
    suffix = path.suffix.lower()
    if labels is not None and suffix in (".npz", ".csv"):
        raise DataError(f"{path}: labels= only applies to IDX images files")
    if suffix == ".npz":
        raw = _Raw(*read_npz(path, "x", "y", y_required=False), str(path), str(path))
    elif suffix == ".csv":
        raw = _Raw(*read_csv(path, target), str(path), f"{path} column {target!r}")
    elif _is_idx(path):
        lab = None
        if labels is not None:
            lab = Path(labels).expanduser()
            if not lab.is_absolute() and not lab.exists() and (path.parent / lab).exists():
                lab = path.parent / lab  # a sibling of the images file
        raw = _read_idx_pair(path, lab)
    else:
        raise DataError(
            f"{path}: unknown data format; expected a .npz, a .csv or an IDX file (gzipped or not)"
        )
    _check_rows(raw)
    return raw.x, raw.y


def _check_rows(raw: _Raw) -> None:
    if raw.x.ndim == 0 or raw.x.shape[0] == 0:
        raise DataError(f"{raw.x_name}: empty data (no samples)")
    if raw.y is not None:
        if raw.y.ndim == 0:
            raise DataError(f"{raw.y_name}: the targets are a single value, not one per sample")
        if raw.y.shape[0] != raw.x.shape[0]:
            raise DataError(
                f"{raw.y_name}: {raw.x.shape[0]} samples but {raw.y.shape[0]} targets; they must match row for row"
            )


# ---------------------------------------------------------------------------
# Checks and conversions, shared by training and prediction


def _shape_str(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def is_compact(x: np.ndarray) -> bool:
    """Integers (or booleans) of at most 2 bytes: float32 holds each value exactly."""
    return x.dtype.kind in "biu" and x.dtype.itemsize <= 2


def as_inputs(
    spec: ir.Spec, x: np.ndarray, *, where: str = "inputs", compact: bool = False
) -> np.ndarray:
    """Raw samples as float32 `[N, *input_shape]` (flat rows are reshaped when the
    element count matches, e.g. 784 -> [1, 28, 28]); no NaN or infinity allowed.

    With `compact`, samples that `is_compact` (MNIST's bytes) stay as they are,
    only reshaped: `Split` converts them batch by batch.
    """
    x = np.asarray(x)
    want = tuple(spec.model.input_shape)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: samples of type {x.dtype} are not numbers")
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"{where}: empty data (no samples)")
    n, sample = x.shape[0], x.shape[1:]
    if tuple(sample) != want:
        if math.prod(sample) != math.prod(want):
            raise DataError(
                f"{where}: each sample has shape {_shape_str(sample)} ({math.prod(sample)} values) "
                f"but the model's input is {_shape_str(want)} ({math.prod(want)} values)"
            )
        x = x.reshape((n, *want))
    if compact and is_compact(x):
        return x  # integers are finite
    return finite_float32(x, where)


def finite_float32(x: np.ndarray, where: str = "inputs") -> np.ndarray:
    """`x` ([N, ...] numbers) as float32, refusing NaN, infinity and values float32
    cannot hold (they would be infinite for the model): the check `run`, `eval` and
    `predict` share."""
    n = x.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        out = x.astype(np.float32)  # float64 values beyond float32's range become inf: caught below
    bad = ~np.isfinite(out)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(n, -1).any(axis=1))
        raise DataError(
            f"{where}: {int(bad.sum())} NaN or infinite input values in {len(rows)} samples "
            f"(first in row {rows[0]}, counting from 0; values beyond float32's 3.4e38 "
            "are infinite for the model)"
        )
    return out


def as_targets(spec: ir.Spec, y: np.ndarray | None, *, where: str = "targets") -> np.ndarray:
    """Targets typed and shaped by the spec's task (docs/architecture.md)."""
    if y is None:
        raise DataError(
            f"{where}: no targets (labels) in this data, and {spec.task} training needs them"
        )
    return check_targets(
        spec.task, y, spec.model.output_shape, spec.classes, where=where, loss=spec.loss.kind
    )


def check_targets(
    task: str,
    y: np.ndarray,
    out_shape,
    classes: int | None = None,
    *,
    where: str = "targets",
    loss: str = "the loss",
) -> np.ndarray:
    """Targets (labels) checked and typed for `task` and a model output of `out_shape`:
    class ids in [0, classes), 0/1 for binary, distributions, finite values.  The
    rules `run`, `eval` and `predict` share."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: targets of type {y.dtype} are not numbers")
    if y.ndim == 0:
        raise DataError(f"{where}: the targets are a single value, not one per sample")
    n = y.shape[0]
    out_shape = tuple(out_shape)
    if task == "classification":
        return _class_ids(y, classes or 0, where)
    with np.errstate(over="ignore", invalid="ignore"):
        y = y.astype(np.float32)  # float64 values beyond float32's range become inf: caught here
    bad = ~np.isfinite(y)
    if bad.any():
        row = int(np.flatnonzero(bad.reshape(n, -1).any(axis=1))[0])
        raise DataError(
            f"{where}: {int(bad.sum())} NaN or infinite targets (first in row {row}, counting "
            "from 0; values beyond float32's 3.4e38 are infinite for the model)"
        )
    if y.ndim == 1 and math.prod(out_shape) == 1:
        y = y.reshape((n, *out_shape))  # [N] is read as [N, 1] for a one-output model
    if tuple(y.shape[1:]) != out_shape:
        raise DataError(
            f"{where}: each target has shape {_shape_str(y.shape[1:])} but the model outputs {_shape_str(out_shape)}"
        )
    if task == "binary":
        bad = (y < 0) | (y > 1)
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(n, -1).any(axis=1))[0])
            raise DataError(
                f"{where}: target {y[i].ravel()[bad[i].ravel()][0]:g} in row {i} is outside [0, 1]; "
                f"{loss} takes 0/1 labels or probabilities"
            )
    elif task == "distribution":
        flat = y.reshape(n, -1)
        neg = (flat < 0).any(axis=1)
        off = np.abs(flat.astype(np.float64).sum(axis=1) - 1.0) > 1e-3
        if neg.any() or off.any():
            i = int(np.flatnonzero(neg | off)[0])
            raise DataError(
                f"{where}: target row {i} is not a probability distribution "
                f"(entries must be >= 0 and sum to 1; it sums to {flat[i].sum():g})"
            )
    elif task != "regression":
        raise DataError(f"unknown task {task!r}")
    return y


def _class_ids(y: np.ndarray, classes: int, where: str) -> np.ndarray:
    n = y.shape[0]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"{where}: targets have shape {_shape_str(y.shape)}, but a classifier takes one class id "
            f"per sample (shape [{n}])",
            hint="for one-hot rows, store their argmax",
        )
    if y.dtype.kind == "f":
        frac = ~np.isfinite(y) | (y != np.round(y))
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise DataError(
                f"{where}: label {y[i]:g} in row {i} is not a whole number; a classifier's targets "
                "are integer class ids (float labels belong to a regression loss such as mse)"
            )
    # Judge the range before casting: 1e20 cast to int64 would read -9223372036854775808.
    bad = (y < 0) | (y >= classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: label {y[i]:g} in row {i} is outside [0, {classes}) "
            f"({int(bad.sum())} such labels; the model has {classes} outputs)"
        )
    return y.astype(np.int64)


def data_warnings(spec: ir.Spec, y: np.ndarray | None) -> list[str]:
    """What the training targets say about the spec that the checker cannot know."""
    out = []
    if spec.task == "classification" and y is not None and y.size and spec.classes:
        used = int(y.max()) + 1
        if spec.classes > 2 * used:
            # The classic forgotten output layer: a hidden linear(256) left as the last layer.
            out.append(
                f"the model has {spec.classes} outputs but the labels use only {used} classes "
                f"(0..{used - 1}); is the output layer missing? (e.g. linear({used}) at the end)"
            )
    return out


# ---------------------------------------------------------------------------
# Preprocessing


@dataclass(frozen=True, eq=False)
class Preprocess:
    """`(x / scale - shift) / divisor`, float32, per feature (`shift` and `divisor`
    have the model's input shape).  Fitted on the training split only."""

    scale: np.float32
    shift: np.ndarray
    divisor: np.ndarray
    normalize: str = "none"

    @classmethod
    def identity(cls, input_shape: ir.Shape, scale: float = 1.0) -> Preprocess:
        return cls(
            np.float32(scale),
            np.zeros(input_shape, np.float32),
            np.ones(input_shape, np.float32),
            "none",
        )

    @classmethod
    def fit(cls, x: np.ndarray, *, scale: float = 1.0, normalize: str = "none") -> Preprocess:
        """Statistics of `x` ([N, *input_shape], raw) after division by `scale`."""
        s = np.float32(scale)
        if not np.isfinite(s) or s == 0:
            raise DataError(f"scale = {scale} cannot divide the inputs")
        if x.size:
            # A tiny scale (1e-45) turns finite inputs into float32 infinities, which
            # training would later misreport as divergence ("lower the learning rate").
            biggest = max(abs(float(x.max())), abs(float(x.min())))  # no copy of x
            if biggest / float(s) > float(np.finfo(np.float32).max):
                raise DataError(
                    f"scale = {scale:g} makes the inputs overflow float32: the largest input "
                    f"{biggest:g} divided by {float(s):g} is beyond 3.4e38",
                    hint="scale divides the inputs; use the inputs' range, e.g. 255 for bytes",
                )
        if normalize == "none":
            return cls.identity(x.shape[1:], scale)
        xs = np.asarray(x, np.float32) / s
        if normalize == "standard":
            # float64 accumulation; population std (ddof 0), as sklearn's StandardScaler.
            shift = xs.mean(axis=0, dtype=np.float64)
            divisor = xs.std(axis=0, dtype=np.float64)
        elif normalize == "minmax":
            shift = xs.min(axis=0).astype(np.float64)
            divisor = xs.max(axis=0).astype(np.float64) - shift
        else:
            raise DataError(f"unknown normalize {normalize!r} (expected none, standard or minmax)")
        shift = shift.astype(np.float32)
        divisor = divisor.astype(np.float32)
        divisor[divisor == 0] = 1.0  # a constant feature is only shifted, not blown up
        return cls(s, shift, divisor, normalize)

    @property
    def is_identity(self) -> bool:
        return bool(self.scale == 1 and not self._shifts and not self._divides)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed float32 copy of `x` ([N, *input_shape]; flat rows of the
        same element count are reshaped to the input shape)."""
        x = np.array(x, dtype=np.float32, copy=True)
        if (
            x.ndim >= 1
            and tuple(x.shape[1:]) != self.shift.shape
            and math.prod(x.shape[1:]) == self.shift.size
        ):
            x = x.reshape((x.shape[0], *self.shift.shape))
        return self._apply_inplace(x)

    def apply_into(self, raw: np.ndarray, out: np.ndarray) -> np.ndarray:
        """`out` (float32, raw's shape; may be `raw` itself) = the preprocessed `raw`, without a
        float32 copy of `raw` first.  The same operations in the same order as the exported
        ONNX graph (Div, Sub, Div); subtracting 0 and dividing by 1 are exact, so those
        passes are skipped."""
        if self.scale != 1:
            np.divide(raw, self.scale, out=out)
        else:
            np.copyto(out, raw, casting="unsafe")
        if self._shifts:
            np.subtract(out, self.shift, out=out)
        if self._divides:
            np.divide(out, self.divisor, out=out)
        return out

    @functools.cached_property
    def _shifts(self) -> bool:
        return bool(self.shift.any())

    @functools.cached_property
    def _divides(self) -> bool:
        return not bool((self.divisor == 1).all())

    def _apply_inplace(self, x: np.ndarray) -> np.ndarray:
        if tuple(x.shape[1:]) != self.shift.shape:
            raise DataError(
                f"preprocessing fitted for samples of shape {_shape_str(self.shift.shape)} "
                f"got samples of shape {_shape_str(x.shape[1:])}"
            )
        return self.apply_into(x, x)

    def save(self, path: str | os.PathLike) -> None:
        """Write `preprocess.npz` atomically (a crash never leaves half a file)."""
        from . import io as fio

        path = Path(path)
        try:
            fio.save_npz(
                path,
                {
                    "scale": np.asarray(self.scale, np.float32),
                    "shift": self.shift,
                    "divisor": self.divisor,
                    "normalize": np.asarray(self.normalize),
                },
            )
        except OSError as e:
            raise DataError(f"{path}: cannot write it: {e.strerror or e}") from None

    @classmethod
    def load(cls, path: str | os.PathLike, input_shape: ir.Shape | None = None) -> Preprocess:
        from . import io as fio

        path = Path(path)
        arrays = fio.read_npz(path, None, ["scale", "shift", "divisor", "normalize"])
        for key in ("scale", "shift", "divisor"):
            if key not in arrays:
                raise DataError(f"{path}: no array named {key!r}; the file holds {_present(path)}")
        scale, shift, divisor = arrays["scale"], arrays["shift"], arrays["divisor"]
        for key in ("scale", "shift", "divisor"):
            a = arrays[key]
            if a.dtype.kind not in "iuf" or not np.isfinite(a).all():
                raise DataError(f"{path}: {key!r} must hold finite numbers")
        if scale.shape != () or scale == 0:
            raise DataError(f"{path}: 'scale' must be one non-zero number")
        if shift.shape != divisor.shape:
            raise DataError(
                f"{path}: 'shift' has shape {_shape_str(shift.shape)} but 'divisor' {_shape_str(divisor.shape)}"
            )
        if (divisor == 0).any():
            raise DataError(f"{path}: 'divisor' contains zeros")
        if input_shape is not None and tuple(shift.shape) != tuple(input_shape):
            raise DataError(
                f"{path}: preprocessing for samples of shape {_shape_str(shift.shape)}, "
                f"but the model's input is {_shape_str(input_shape)}"
            )
        normalize = str(arrays["normalize"]) if "normalize" in arrays else "none"
        return cls(
            np.float32(scale), shift.astype(np.float32), divisor.astype(np.float32), normalize
        )


# ---------------------------------------------------------------------------
# The whole data section


@dataclass(frozen=True, slots=True)
class Split:
    """One split's samples and targets.

    `samples` is float32 `[N, *input_shape]`, preprocessed, unless `pre` is set:
    then it holds the samples as stored, small integers (`is_compact`: MNIST's
    bytes, a quarter of the float32 size), and `rows` converts and preprocesses
    each batch as it is taken, with the same float32 operations as `x`, so the
    same bits.
    """

    samples: np.ndarray
    y: np.ndarray | None  # by task, see as_targets
    pre: Preprocess | None = None
    _raw: list = field(default_factory=list, repr=False, compare=False)  # [raw batch buffer]

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    @property
    def x(self) -> np.ndarray:
        """All samples, float32 and preprocessed: a new array on every call for a compact
        split (train with `rows`, which converts one batch at a time)."""
        if self.pre is None:
            return self.samples
        return self.pre.apply_into(self.samples, np.empty(self.samples.shape, np.float32))

    def rows(self, idx: slice | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Float32 preprocessed samples `[idx]`: a view for a slice of a float32 split,
        else written into `out` (float32, the batch's shape; required when `pre` is set)."""
        x = self.samples
        if isinstance(idx, slice):
            return x[idx] if self.pre is None else self.pre.apply_into(x[idx], out)
        if self.pre is None:
            # mode="clip" writes straight into `out`; the default mode would build a
            # temporary the size of the data set first.
            return x[idx] if out is None else np.take(x, idx, axis=0, out=out, mode="clip")
        b = out.shape[0]
        if self._gather_kernel(out):
            pre = self.pre
            kernels.get("gather_preprocess")(
                x.reshape(x.shape[0], -1), idx, pre.scale, pre.shift.reshape(-1),
                pre.divisor.reshape(-1), pre._shifts, pre._divides, out.reshape(b, -1),
            )  # fmt: skip
            return out
        if not self._raw or self._raw[0].shape[0] < b or self._raw[0].shape[1:] != out.shape[1:]:
            self._raw[:] = [np.empty(out.shape, x.dtype)]  # kept for the next batches
        return self.pre.apply_into(np.take(x, idx, axis=0, out=self._raw[0][:b], mode="clip"), out)

    def _gather_kernel(self, out: np.ndarray) -> bool:
        """Whether `rows` can gather and preprocess in one compiled pass (kernels.py;
        the same float32 operations, so the same bits): float32 arithmetic on
        C-ordered arrays, and numba there (imported here, by training's first batch)."""
        pre, x = self.pre, self.samples
        return (
            x.dtype.kind in "iu"
            and x.ndim >= 2
            and x.flags.c_contiguous
            and out.flags.c_contiguous
            and out.dtype == np.float32
            and isinstance(pre.scale, np.float32)
            and pre.shift.dtype == np.float32 == pre.divisor.dtype
            and pre.shift.flags.c_contiguous
            and pre.divisor.flags.c_contiguous
            and kernels.available()
        )

    def dense(self) -> Split:
        """This split with float32 preprocessed samples (itself when it already has them)."""
        return self if self.pre is None else Split(self.x, self.y)


@dataclass(frozen=True, slots=True)
class Prepared:
    train: Split
    val: Split | None
    test: Split | None
    preprocess: Preprocess
    spec: ir.Spec | None = None  # the spec with `input auto` / `linear(outputs)` resolved
    schema: object | None = None  # tabular.Schema: tables, class names, target scaling
    notes: tuple[str, ...] = ()  # what the data step did, for the run's log


def split_indices(
    n: int, fraction: float, seed: int, *, where: str = "train data", name: str = "validate"
) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): sklearn's `train_test_split(test_size=fraction,
    random_state=seed)` indices, i.e. a RandomState permutation whose first
    ceil(n * fraction) entries are held out."""
    if isinstance(fraction, bool) or not 0 < fraction < 1:
        raise DataError(f"{name} = {fraction}: a fraction must lie strictly between 0 and 1")
    n_val = math.ceil(fraction * n)
    if n - n_val < 1:
        raise DataError(
            f"{where}: too few rows for {name} = {fraction}: {n} rows leave {n - n_val} for training "
            f"after holding out {n_val}"
        )
    # RandomState accepts 0 .. 2**32 - 1; wrap instead of failing on other seeds.
    perm = np.random.RandomState(seed % 2**32).permutation(n)
    return perm[n_val:], perm[:n_val]


def _spec_dir(spec: ir.Spec) -> Path:
    return Path(spec.path).parent if spec.path else Path.cwd()


def _labeled(spec: ir.Spec, src: ir.DataSource, base_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Checked inputs (small integers kept compact, see `Split`) and targets of one source."""
    with _located(src):
        raw = _load(src, base_dir)
        _check_rows(raw)
        x = as_inputs(spec, raw.x, where=raw.x_name, compact=True)
        return x, as_targets(spec, raw.y, where=raw.y_name)


def _written_outputs(spec: ir.Spec) -> int | None:
    """The model's output width when the spec writes it (not `linear(outputs)`)."""
    if "outputs" in spec.model.auto:
        return None
    return math.prod(spec.model.output_shape)


def _outputs_of(spec: ir.Spec, y: np.ndarray | None, schema) -> int | None:
    """What `linear(outputs)` becomes: classes of a classifier, 1 for binary, targets per row."""
    if schema is not None and schema.target is not None:
        t = schema.target
        if t.kind == "classes" and spec.task == "classification":
            return len(t.classes)
        return 1
    if y is None:
        return None
    if spec.task == "classification":
        y = np.asarray(y)
        if y.size == 0 or y.dtype.kind not in "biuf" or not np.isfinite(y).all():
            return None
        return int(y.max()) + 1 if y.min() >= 0 else None  # class ids 0 .. k-1: as_targets checks
    if spec.task == "binary":
        return 1
    return math.prod(y.shape[1:]) if y.ndim > 1 else 1


def _resolved(spec: ir.Spec, width: int, outputs: int | None, src) -> ir.Spec:
    if not spec.model.pending:
        return spec
    with _located(src):
        if "outputs" in spec.model.auto and outputs is None:
            raise DataError(
                "`linear(outputs)` takes the number of classes or targets from the training labels, "
                "and these have none that can be counted"
            )
        spec = ir.resolve(spec, width, outputs)
        w = spec.loss.options.get("weight")
        if w is not None and len(w) != spec.model.output_shape[-1]:
            raise DataError(
                f"the loss's `weight` has {len(w)} entries but the data has "
                f"{spec.model.output_shape[-1]} classes"
            )
        if spec.task == "classification" and spec.model.output_shape[-1] < 2:
            raise DataError(
                "the training labels hold a single class; a classifier needs two or more"
            )
    return spec


def _target_scaling(spec: ir.Spec, y: np.ndarray, rows: np.ndarray, schema):
    """(mean, std) of the training rows' target for `normalize_target = standard`, else None."""
    if spec.data is None or spec.data.normalize_target != "standard":
        return None
    if spec.task != "regression":
        raise DataError(f"normalize_target applies to regression; this is a {spec.task} model")
    if schema is not None and schema.target is not None and schema.target.mean is not None:
        return schema.target.mean, schema.target.std
    v = np.asarray(y, np.float64)[rows].reshape(len(rows), -1)
    mean, std = v.mean(axis=0), v.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (float(mean[0]), float(std[0])) if mean.size == 1 else (mean.tolist(), std.tolist())


def scale_target(y: np.ndarray, scaling) -> np.ndarray:
    mean, std = scaling
    return ((np.asarray(y, np.float64) - np.asarray(mean)) / np.asarray(std)).astype(np.float32)


def unscale_target(y: np.ndarray, scaling) -> np.ndarray:
    """Model outputs in the target's units: y * std + mean, in float32 like the ONNX graph."""
    mean, std = scaling
    return (np.asarray(y, np.float32) * np.float32(std) + np.float32(mean)).astype(np.float32)


def target_scaling(schema) -> tuple | None:
    t = getattr(schema, "target", None)
    if t is None or t.mean is None:
        return None
    return t.mean, t.std


def prepare(spec: ir.Spec, base_dir: Path | None = None) -> Prepared:
    """Load, check, split and preprocess everything `spec.data` names.

    Tables are split first and then fitted (kinds, vocabularies, imputation) on the
    training rows only; `input auto` and `linear(outputs)` are resolved from what the
    data holds (`Prepared.spec`)."""
    from . import tabular

    data = spec.data
    if data is None or data.train is None:
        raise DataError(
            f"{spec.path or spec.name}: the spec has no training data (data {{ train = ... }})"
        )
    base = Path(base_dir) if base_dir is not None else _spec_dir(spec)
    notes: list[str] = []
    tab = raw = None
    with _located(data.train):
        if is_tabular(data.train):
            tab = read_table(data.train, base)
            n = tab.features.num_rows
            if tab.dropped:
                notes.append(f"{tab.where}: left out {tab.dropped} rows whose target is missing")
        else:
            raw = _load(data.train, base)
            _check_rows(raw)
            n = raw.x.shape[0]
    rows = np.arange(n)
    held: dict[str, np.ndarray] = {}
    for key, name in (("test", "test"), ("validate", "validate")):
        frac = getattr(data, key)
        if frac is not None and not isinstance(frac, ir.DataSource):
            # A test fraction is held out first, so the validation split never sees those rows.
            with _located(data.train):
                tr, out = split_indices(len(rows), float(frac), spec.train.seed, name=name)
            held[key], rows = rows[out], rows[tr]

    schema = None
    with _located(data.train):
        if tab is not None:
            schema = fit_table_schema(
                data.train, tab, spec.task, rows, _written_outputs(spec), data.normalize_target
            )
            x_all, report = tabular.encode(
                schema, tab.features, where=tab.where, line_offset=tab.line_offset, compact=True
            )
            y_all = (
                tabular.encode_target(schema, tab.target, where=tab.where)
                if tab.target is not None
                else None
            )
            where_x, where_y = tab.where, f"{tab.where} column {tab.target_name!r}"
        else:
            x_all, y_all, report = raw.x, raw.y, None
            where_x, where_y = raw.x_name, raw.y_name
    spec = _resolved(spec, math.prod(x_all.shape[1:]), _outputs_of(spec, y_all, schema), data.train)
    with _located(data.train):
        x_all = as_inputs(spec, x_all, where=where_x, compact=True)
        y_all = as_targets(spec, y_all, where=where_y)
        scaling = _target_scaling(spec, y_all, rows, schema)
    if scaling is not None:
        y_all = scale_target(y_all, scaling)
        if schema is None:
            schema = tabular.Schema((), tabular.TargetSchema(None, "values", (), *scaling))

    def source(src: ir.DataSource) -> tuple[np.ndarray, np.ndarray]:
        nonlocal report
        if tab is None or not is_tabular(src):  # arrays, or a table read as plain numbers
            x, y = _labeled(spec, src, base)
        else:
            with _located(src):
                t = read_table(src, base, schema)
                x, r = tabular.encode(schema, t.features, where=t.where, line_offset=t.line_offset)
                report = tabular.merge_reports(report, r)
                if t.target is None:
                    raise DataError(f"{t.where}: no target column")
                y = tabular.encode_target(
                    schema, t.target, where=t.where, line_offset=t.line_offset
                )
                x = as_inputs(spec, x, where=t.where)
                y = as_targets(spec, y, where=f"{t.where} column {t.target_name!r}")
        return x, (scale_target(y, scaling) if scaling is not None else y)

    test = val = None
    if isinstance(data.test, ir.DataSource):
        test = source(data.test)
    elif "test" in held:
        test = (x_all[held["test"]], y_all[held["test"]])
    if isinstance(data.validate, ir.DataSource):
        val = source(data.validate)
    elif "validate" in held:
        val = (x_all[held["validate"]], y_all[held["validate"]])
    x, y = (x_all, y_all) if len(rows) == n and not held else (x_all[rows], y_all[rows])
    del x_all, y_all
    if report is not None:
        notes += [f"{tab.where}: {line}" for line in tabular.summary(report, schema)]
    return _assemble(spec, (x, y), val, test, schema, tuple(notes), base=base)


def prepare_arrays(
    spec: ir.Spec,
    x: np.ndarray,
    y: np.ndarray,
    *,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> Prepared:
    """`prepare` for arrays given in Python (`Model.fit(X, y)`): `x`, `y` are the
    training data, checked as a data file's are.  The spec's `validate` fraction
    is held out of them (seeded), unless `validation` gives the rows; its
    `test` is not used (the caller keeps their own test set); preprocessing
    is fitted on the training rows, as always."""
    x = as_inputs(spec, x, where="X", compact=True)
    y = as_targets(spec, y, where="y")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"X has {x.shape[0]} rows but y has {y.shape[0]}; they must match")
    val = None
    if validation is not None:
        val = (
            as_inputs(spec, validation[0], where="validation X", compact=True),
            as_targets(spec, validation[1], where="validation y"),
        )
    elif spec.data is not None and isinstance(spec.data.validate, (int, float)):
        tr, va = split_indices(len(x), float(spec.data.validate), spec.train.seed, where="X")
        val = (x[va], y[va])
        x, y = x[tr], y[tr]
    return _assemble(spec, (x, y), val, None)


def prepare_table(
    spec: ir.Spec,
    features,
    target,
    *,
    target_name: str | None = None,
    validation: tuple | None = None,
) -> Prepared:
    """`prepare_arrays` for a table given in Python (`Model.fit(df, y)`): `features` a
    pyarrow Table, `target` a pyarrow array.  The rules of a spec's csv(...) source
    (fcspec.tabular): the spec's `validate` fraction is held out first (unless
    `validation` gives a (Table, array) pair), then the schema (kinds, one-hot
    vocabularies, imputation, class labels) is fitted on the training rows and every
    row is encoded by it; `input auto` / `linear(outputs)` take the widths it gives.
    The training source's `missing`, `unknown` and `categorical` options apply."""
    from . import tabular

    n = features.num_rows
    if n == 0:
        raise DataError("X: empty data (no rows)")
    if len(target) != n:
        raise DataError(f"X has {n} rows but y has {len(target)}; they must match")
    data = spec.data
    rows, held = np.arange(n), None
    if validation is None and data is not None and isinstance(data.validate, (int, float)):
        rows, held = split_indices(n, float(data.validate), spec.train.seed, where="X")
    src = data.train if data is not None and is_tabular(data.train) else None
    args = src.args if src is not None else {}
    categorical = [
        tabular._name(features.column_names, c, "X", "categorical")
        for c in (args.get("categorical") or ())
        if not isinstance(c, str) or c in features.column_names
    ]
    schema = tabular.fit(
        features,
        target,
        target_name=target_name,
        task=spec.task,
        train_rows=rows,
        categorical=categorical,
        missing=args.get("missing", "mean"),
        unknown=args.get("unknown", "ignore"),
        normalize_target=data.normalize_target if data is not None else "none",
        outputs=_written_outputs(spec),
        where="X",
        line_offset=0,
    )
    x_all, report = tabular.encode(schema, features, where="X", line_offset=0)
    y_all = tabular.encode_target(schema, target, where="y", line_offset=0)
    spec = _resolved(spec, x_all.shape[1], _outputs_of(spec, y_all, schema), src)
    x_all = as_inputs(spec, x_all, where="X")
    y_all = as_targets(spec, y_all, where="y")
    scaling = _target_scaling(spec, y_all, rows, schema)
    if scaling is not None:
        y_all = scale_target(y_all, scaling)
    val = None
    if validation is not None:
        vx, vy = validation
        xv, r = tabular.encode(schema, vx, where="validation X", line_offset=0)
        report = tabular.merge_reports(report, r)
        yv = tabular.encode_target(schema, vy, where="validation y", line_offset=0)
        yv = as_targets(spec, yv, where="validation y")
        if scaling is not None:
            yv = scale_target(yv, scaling)
        val = (as_inputs(spec, xv, where="validation X"), yv)
    elif held is not None:
        val = (x_all[held], y_all[held])
    x, y = (x_all, y_all) if held is None else (x_all[rows], y_all[rows])
    notes = tuple(f"X: {line}" for line in tabular.summary(report, schema))
    return _assemble(spec, (x, y), val, None, schema, notes)


def _assemble(
    spec: ir.Spec,
    train,
    val,
    test,
    schema=None,
    notes: tuple[str, ...] = (),
    base: Path | None = None,
) -> Prepared:
    """Fit the preprocessing on the training rows and build the splits."""
    x, y = train
    data = spec.data if spec.data is not None else ir.Data(train=None)
    if data.statistics is not None:
        # Saved statistics (an imported model's): used as they are, never refitted.
        where = base if base is not None else _spec_dir(spec)
        pre = Preprocess.load(where / data.statistics, spec.model.input_shape)
    else:
        with _located(data.train):
            pre = Preprocess.fit(x, scale=data.scale, normalize=data.normalize)
    if schema is not None and schema.categorical and not pre.is_identity:
        # one-hot columns stay 0/1, as scikit-learn's OneHotEncoder leaves them
        onehot = ~schema.numeric_mask()
        shift, divisor = pre.shift.copy(), pre.divisor.copy()
        shift[onehot], divisor[onehot] = 0, 1
        pre = Preprocess(pre.scale, shift, divisor, pre.normalize)

    def dense(x: np.ndarray) -> np.ndarray:
        # float32 arrays from as_inputs are ours: preprocessed in place to spare a copy
        if x.dtype == np.float32:
            return pre._apply_inplace(x)
        return pre.apply_into(x, np.empty(x.shape, np.float32))

    # The training split stays compact (batches are converted as they are taken);
    # validation and test sets are converted once, as they are evaluated whole.
    return Prepared(
        train=Split(x, y, pre) if is_compact(x) else Split(dense(x), y),
        val=Split(dense(val[0]), val[1]) if val else None,
        test=Split(dense(test[0]), test[1]) if test else None,
        preprocess=pre,
        spec=spec,
        schema=schema,
        notes=tuple(notes),
    )


def resolve_from_data(spec: ir.Spec, base_dir: Path | None = None) -> tuple[ir.Spec, str | None]:
    """(spec with its data widths, a note saying what the data gave) for show / explain;
    the spec unchanged and the reason when the data cannot be read."""
    if not spec.model.pending:
        return spec, None
    try:
        p = prepare(spec, base_dir)
    except DataError as e:
        return spec, e.diagnostic.message
    m = p.spec.model
    what = [f"input [{m.input_shape[0]}]" if "input" in m.auto else None]
    if "outputs" in m.auto:
        what.append(f"outputs {m.output_shape[-1]}")
    note = ", ".join(w for w in what if w)
    schema = p.schema
    if schema is not None and schema.columns:
        note += f" ({len(schema.columns)} columns -> {schema.width} features"
        if schema.target is not None and schema.target.kind == "classes":
            shown = ", ".join(str(c) for c in schema.target.classes[:8])
            note += f"; classes {shown}" + (", ..." if len(schema.target.classes) > 8 else "")
        note += ")"
    return p.spec, note
