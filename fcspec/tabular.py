"""Tables as people have them: CSV and Parquet files, pandas DataFrames, NumPy columns.

The pipeline, each step a function here:

    read_csv / read_parquet  file -> pyarrow.Table (pyarrow parses and infers types;
                             fcspec only sniffs the delimiter and checks the traps)
    to_table                 a pandas DataFrame / NumPy array / dict of columns -> Table
    fit                      Table (+ which rows train) -> Schema: every column's kind,
                             vocabulary and imputation value, the target's classes
    encode / encode_target   Table + Schema -> float32 features, class ids / values

The `Schema` is plain data and travels as readable JSON (`schema.json` in the run
folder, `to_json` / `from_json`); the ONNX exporter bakes the same numbers into
the graph.  Encoding rules (docs/language.md, "Tabular data"):

- a column whose non-missing cells are all numbers is numeric, any other one is
  categorical; `categorical = [...]` forces number-coded columns to categories;
- a categorical column becomes one float per category of the training rows, in
  sorted order (one-hot); an unseen category is all zeros, or an error with
  `unknown = error`;
- missing cells (empty, NA, N/A, NaN, null, ?, None) are replaced by the training
  rows' mean / median / zero (numbers) or most frequent value (categories), or
  refused with `missing = error`;
- class labels (strings or any numbers) map to indices in sorted order.

Everything wrong with a table is a `DataError` naming the file and the column.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError, closest

# Cells read as missing.  pyarrow's own default list also holds "-NaN", "#N/A" and
# friends; this one is the list, in the spellings seen in real files.
MISSING_TOKENS = ("", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "?")
DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
WHITESPACE = " "  # the sniffer's name for "runs of spaces or tabs"
MISSING = ("mean", "median", "most_frequent", "zero", "error")
UNKNOWN = ("ignore", "error")
SCHEMA_FORMAT = 1
SNIFF_BYTES = 1 << 16
SAMPLE_BYTES = 1 << 20  # the first rows, parsed to guess which integer columns fit a byte
# Blocks of 4 MB: pyarrow parses these fastest here (larger ones fall out of the caches),
# and a block's int64 arrays stay a fraction of the narrowed table.
BLOCK_BYTES = 1 << 22
PROGRESS_BYTES = 50 << 20  # files larger than this show a progress bar on a terminal

Column = str | int  # a column named, or counted from 0


# ---------------------------------------------------------------------------
# Reading files


def _pa():
    import pyarrow as pa
    import pyarrow.compute as pc

    return pa, pc


class _Counted(io.RawIOBase):
    """A binary file that advances a tqdm bar as pyarrow reads it."""

    def __init__(self, f, bar):
        self._f, self._bar = f, bar

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._f.readinto(b)
        if n:
            self._bar.update(n)
        return n

    def close(self) -> None:
        self._f.close()
        self._bar.close()
        super().close()


def _open(path: Path):
    """The file's bytes, decompressed by its name: .gz .bz2 .zst .lz4 .br (pyarrow), .xz (lzma)."""
    pa, _ = _pa()
    if path.name.lower().endswith(".xz"):
        return lzma.open(path, "rb")
    return pa.input_stream(str(path), compression="detect")


def _head(path: Path) -> bytes:
    try:
        with _open(path) as f:
            return f.read(SNIFF_BYTES)
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise DataError(f"{path}: cannot read it: {e}") from None


def _lines(head: bytes) -> list[str]:
    text = head.decode("utf-8", errors="replace").removeprefix("\ufeff")
    lines = text.splitlines()
    if len(head) == SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut off
    return [ln for ln in lines if ln.strip()][:50]


def _unquoted(line: str) -> str:
    return re.sub(r'"[^"]*"', "", line)


def sniff_delimiter(lines: Sequence[str]) -> str:
    """The delimiter of the first lines of a text table: comma, tab, semicolon or pipe
    when every line holds the same (non-zero) number of it, else whitespace when the
    lines split on spaces into the same number of fields, else comma."""
    if not lines:
        return ","
    best, best_count = None, 0
    for d in DELIMITERS:
        counts = {_unquoted(ln).count(d) for ln in lines}
        if len(counts) == 1 and (c := counts.pop()) > best_count:
            best, best_count = d, c
    if best is not None:
        return best
    widths = {len(ln.split()) for ln in lines}
    if len(widths) == 1 and widths.pop() > 1:
        return WHITESPACE
    return ","


def _delimiter_hint(lines: Sequence[str], used: str) -> str | None:
    """When a file read as one column would split on another delimiter: the hint."""
    for d, name in DELIMITERS.items():
        if d != used and lines and all(_unquoted(ln).count(d) > 0 for ln in lines):
            shown = "\\t" if d == "\t" else d
            return f'{name}-separated? use `delimiter = "{shown}"` or leave it `auto`'
    return None


def read_csv(
    path: str | os.PathLike,
    *,
    header: bool = True,
    delimiter: str = "auto",
    text_columns: Sequence[Column] = (),
    number_columns: Sequence[Column] = (),
    progress: bool | None = None,
) -> Any:
    """A CSV file (compressed by name or not) as a pyarrow Table, with pyarrow's types.

    `text_columns` are read as raw strings (forced categories: "01" stays "01"),
    `number_columns` as float64 (a schema's numeric columns, so a stray word is an
    error at its cell rather than a silent category).  Header-less files name their
    columns "0", "1", ...  Refuses the traps: a header of numbers, duplicate names,
    a single column that another delimiter would split.
    """
    pa, _ = _pa()
    import pyarrow.csv as pcsv

    path = Path(path)
    _require_file(path)
    head = _head(path)
    if not head.strip():
        raise DataError(f"{path}: empty file (a header row naming the columns is expected)")
    lines = _lines(head)
    sniffed = delimiter == "auto"
    d = sniff_delimiter(lines) if sniffed else delimiter
    if len(d) != 1:
        raise DataError(f"{path}: delimiter {delimiter!r} must be one character (or auto)")
    first = [
        c.strip().strip('"') for c in (lines[0].split() if d == WHITESPACE else lines[0].split(d))
    ]
    names = None if header else [str(i) for i in range(len(first))]
    types = {}
    for cols, t in ((text_columns, pa.string()), (number_columns, pa.float64())):
        for c in cols:
            if isinstance(c, int):
                if names is not None and -len(names) <= c < len(names):
                    types[names[c]] = t
                elif header and -len(first) <= c < len(first):
                    types[first[c]] = t
            else:
                types[c] = t
    size = _size(path)
    from .data import CSV_BYTES_PER_BYTE, size_before_reading

    size_before_reading(path, CSV_BYTES_PER_BYTE, "a CSV file")  # before pyarrow allocates
    show = progress if progress is not None else (size > PROGRESS_BYTES and sys.stderr.isatty())
    spaced = None
    if d == WHITESPACE:
        # pyarrow takes one delimiter character; runs of blanks become one space first.
        try:
            with _open(path) as f:
                text = f.read().decode("utf-8", errors="strict").removeprefix("\ufeff")
        except UnicodeDecodeError:
            raise DataError(f"{path}: not a UTF-8 text file, so not a CSV file") from None
        spaced = "\n".join(" ".join(ln.split()) for ln in text.splitlines() if ln.strip()).encode()
        d = " "

    def source(bar: bool):
        if spaced is not None:
            return io.BytesIO(spaced)
        if bar and not _compressed(path):  # the bar counts the bytes of the file itself
            from tqdm import tqdm

            t = tqdm(
                total=size, unit="B", unit_scale=True, desc=f"reading {path.name}", leave=False
            )
            return io.BufferedReader(_Counted(open(path, "rb"), t), 1 << 20)
        return _open(path)

    def options(column_types: dict, threads: bool = True) -> dict:
        return dict(
            read_options=pcsv.ReadOptions(
                column_names=names, block_size=BLOCK_BYTES, use_threads=threads
            ),
            parse_options=pcsv.ParseOptions(delimiter=d),
            convert_options=pcsv.ConvertOptions(
                null_values=list(MISSING_TOKENS),
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                column_types=column_types,
            ),
        )

    def parse(column_types: dict, bar: bool):
        with source(bar) as src:
            return pcsv.read_csv(src, **options(column_types))

    try:
        guess = _byte_columns(pcsv, _sample(path, spaced), options(types, threads=False), types)
        table = None
        if guess:
            try:
                table = parse({**guess, **types}, show)
            except pa.ArrowInvalid:
                pass  # a column guessed as bytes holds more (or a word) further down
        if table is None:
            table = parse(types, show)
        table = _narrowed(table)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file, so not a CSV file") from None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        msg = str(e)
        if "Row #" not in msg:
            msg = _serial_error(pcsv, source, options(types, threads=False)) or msg
        row, text = _arrow_message(msg, names or first, header)
        line = _line_of_row(path, d, row) if row else None
        raise DataError(f"{path}:{line}: {text}" if line else f"{path}: {text}") from None
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise DataError(f"{path}: cannot read it: {e}") from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to read it") from None
    cols = [_bare(c) for c in table.column_names]
    table = table.rename_columns(cols)
    if table.num_columns == 1:
        hint = _delimiter_hint(lines, d)
        if hint:
            raise DataError(
                f"{path}: the file reads as one column ({cols[0][:60]!r}) with delimiter "
                f"{'auto (sniffed ' + repr(d) + ')' if sniffed else repr(d)}",
                hint=hint,
            )
    if header:
        _check_header(path, cols)
    for i, t in enumerate(table.schema.types):
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            raise DataError(
                f"{path}: column {cols[i]!r} is not UTF-8 text", hint="save the file as UTF-8"
            )
    return table


# Integer columns are kept in the narrowest type that holds them (MNIST's pixels in
# one byte instead of eight): the table then takes a fraction of the file's memory.
def _narrowest(arr) -> str:
    import pyarrow.compute as pc

    if arr.null_count == len(arr):
        return "uint8"
    mm = pc.min_max(arr)
    lo, hi = mm["min"].as_py(), mm["max"].as_py()
    if lo >= 0 and hi <= 255:
        return "uint8"
    for t, (a, b) in (("int16", (-(2**15), 2**15 - 1)), ("int32", (-(2**31), 2**31 - 1))):
        if a <= lo and hi <= b:
            return t
    return "int64"


def _sample(path: Path, spaced: bytes | None) -> bytes:
    """The file's first SAMPLE_BYTES, up to the end of its last whole line."""
    if spaced is not None:
        head = spaced[:SAMPLE_BYTES]
    else:
        with _open(path) as f:
            head = f.read(SAMPLE_BYTES)
    return head if len(head) < SAMPLE_BYTES else head[: head.rfind(b"\n") + 1]


def _byte_columns(pcsv, sample: bytes, options: dict, given: dict) -> dict:
    """uint8 for the integer columns whose cells in the file's first rows (`sample`) are all
    0..255: MNIST's pixels are then parsed straight into one byte per cell instead of eight.
    A guess, checked by the parse itself: a later value that does not fit fails it, and the
    file is read again with its types inferred (`read_csv`)."""
    pa, _ = _pa()
    try:
        rows = pcsv.read_csv(io.BytesIO(sample), **options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return {}  # a quoted line break cut, or a malformed row: the full read says so
    return {
        name: pa.uint8()
        for name, col in zip(rows.column_names, rows.columns)
        if name not in given and pa.types.is_int64(col.type) and _narrowest(col) == "uint8"
    }


def _narrowed(table):
    """The table with its int64 columns in the narrowest type that holds them."""
    pa, _ = _pa()
    if not any(pa.types.is_int64(t) for t in table.schema.types):
        return table
    cols = [
        c.cast(pa.type_for_alias(_narrowest(c))) if pa.types.is_int64(c.type) else c
        for c in table.columns
    ]
    return pa.Table.from_arrays(cols, names=table.column_names)


def _bare(name: str) -> str:
    """A header name without blanks around it or the single quotes some writers add."""
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == "'":
        name = name[1:-1].strip()
    return name


def _compressed(path: Path) -> bool:
    return path.suffix.lower() in (".gz", ".bz2", ".zst", ".lz4", ".br", ".xz")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _serial_error(pcsv, source, options: dict) -> str | None:
    """The message of a failed read, read again on one thread: pyarrow's threaded reader
    cannot count rows, so only the serial one says which row is malformed (the error
    path alone pays for the second parse)."""
    pa, _ = _pa()
    try:
        with source(False) as src:
            pcsv.read_csv(src, **options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        return str(e)
    except Exception:  # noqa: BLE001 - the first read's error stands
        return None
    return None


def _line_of_row(path: Path, delimiter: str, row: int) -> int:
    """The file line where pyarrow's row number `row` starts.  pyarrow counts records
    (the header is row 1) and skips empty lines; a quoted cell may span lines.  Python's
    csv module, with pyarrow's quoting defaults, walks the records to the line; for a
    whitespace-separated file records are its non-empty lines."""
    import csv

    try:
        f = io.TextIOWrapper(_open(path), encoding="utf-8-sig", errors="replace", newline="")
        with f:
            if delimiter == WHITESPACE:
                records = ((i, ln) for i, ln in enumerate(f, 1) if ln.strip())
                return next((i for k, (i, _) in enumerate(records, 1) if k == row), row)
            reader = csv.reader(f, delimiter=delimiter, quotechar='"', doublequote=True)
            start, k = 1, 0
            for record in reader:
                if record:
                    k += 1
                    if k == row:
                        return start
                start = reader.line_num + 1
    except (csv.Error, OSError, EOFError, lzma.LZMAError):
        pass  # the row number is then the best there is
    return row


def _arrow_message(msg: str, names: Sequence[str], header: bool = True) -> tuple[int | None, str]:
    """(pyarrow's row number when it gave one, its message with a column number turned
    into the column's name)."""
    msg = msg.strip().splitlines()[0]
    m = re.match(
        r"In CSV column #(\d+): (?:Row #(\d+): )?CSV conversion error to (\w+): invalid value '(.*)'",
        msg,
    )
    if m:
        j, row, kind, value = int(m[1]), m[2], m[3], m[4]
        col = names[j] if j < len(names) else f"#{j}"
        want = (
            "a number" if kind in ("double", "float") or kind.startswith(("int", "uint")) else kind
        )
        return (int(row) if row else None), f"column {col!r}: {value!r} is not {want}"
    m = re.match(r"CSV parse error: (?:Row #(\d+): )?Expected (\d+) columns, got (\d+): (.*)", msg)
    if m:
        first = "the header" if header else "the first row"
        return (int(m[1]) if m[1] else None), (
            f"a row has {m[3]} cells but {first} has {m[2]}: {m[4][:80]!r}"
        )
    if msg == "Empty CSV file":
        return None, "empty file (a header row naming the columns is expected)"
    return None, f"malformed CSV: {msg}"


def _check_header(path: Path, cols: Sequence[str]) -> None:
    if cols and all(_is_number(c) for c in cols):
        shown = ", ".join(cols[:4]) + (", ..." if len(cols) > 4 else "")
        raise DataError(
            f"{path}: the header row is all numbers ({shown})",
            hint="is this file header-less? use `header = false` (columns are then 0, 1, ...)",
        )
    seen: dict[str, int] = {}
    for i, c in enumerate(cols):
        if c in seen:
            raise DataError(
                f"{path}: columns {seen[c]} and {i} are both named {c!r}",
                hint="give every column its own name in the header row",
            )
        seen[c] = i


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def read_parquet(path: str | os.PathLike, *, text_columns: Sequence[Column] = ()) -> Any:
    """A Parquet file as a pyarrow Table (its stored types); `text_columns` cast to strings."""
    pa, pc = _pa()
    import pyarrow.parquet as pq

    path = Path(path)
    _require_file(path)
    try:
        table = pq.read_table(str(path))
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file: {str(e).splitlines()[0]}") from None
    _check_header_names(path, table.column_names)
    return _with_text(table, text_columns, str(path))


def _check_header_names(path: Path, cols: Sequence[str]) -> None:
    seen = set()
    for c in cols:
        if c in seen:
            raise DataError(f"{path}: two columns are named {c!r}")
        seen.add(c)


def _with_text(table, text_columns: Sequence[Column], where: str):
    pa, pc = _pa()
    for c in text_columns:
        name = _name(table.column_names, c, where, "categorical")
        j = table.column_names.index(name)
        table = table.set_column(j, name, _as_text(table.column(j)))
    return table


def _as_text(col):
    pa, pc = _pa()
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    if pa.types.is_floating(t):
        # 2.0 reads back as "2", as it would be written in a CSV file of codes
        arr = col.to_numpy(zero_copy_only=False)
        vals = [
            None if v != v else (str(int(v)) if float(v).is_integer() else repr(float(v)))
            for v in arr
        ]
        return pa.chunked_array([pa.array(vals, pa.string())])
    if pa.types.is_string(t):
        return col
    return col.cast(pa.string())


def to_table(data: Any, names: Sequence[str] | None = None) -> Any:
    """A pandas DataFrame, a dict of columns, a 2-D NumPy array or a pyarrow Table as a
    pyarrow Table (NumPy columns are named "0", "1", ... unless `names` are given)."""
    pa, _ = _pa()
    if isinstance(data, pa.Table):
        return data
    mod = type(data).__module__
    if mod.startswith("pandas"):
        if hasattr(data, "to_frame") and not hasattr(data, "columns"):
            data = data.to_frame()
        df = data.copy()
        df.columns = [str(c) for c in df.columns]
        return pa.Table.from_pandas(df, preserve_index=False)
    if mod.startswith("polars"):
        return data.to_arrow()
    if isinstance(data, dict):
        return pa.table({str(k): _array(v) for k, v in data.items()})
    a = np.asarray(data)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise DataError(f"a table needs rows and columns, got an array of shape {list(a.shape)}")
    cols = list(names) if names is not None else [str(i) for i in range(a.shape[1])]
    if len(cols) != a.shape[1]:
        raise DataError(f"{len(cols)} names for {a.shape[1]} columns")
    return pa.table({c: _array(a[:, j]) for j, c in enumerate(cols)})


def _array(v):
    pa, _ = _pa()
    a = np.asarray(v)
    if a.dtype.kind == "O":
        cells = [
            None if (x is None or (isinstance(x, float) and x != x)) else x for x in a.tolist()
        ]
        if all(c is None or isinstance(c, (int, float)) and not isinstance(c, bool) for c in cells):
            return pa.array(cells, pa.float64())
        return pa.array([None if c is None else str(c) for c in cells], pa.string())
    if a.dtype.kind == "U":
        return pa.array([None if c in MISSING_TOKENS else c for c in a.tolist()], pa.string())
    if a.dtype.kind == "f":
        return pa.array(a, from_pandas=True)  # NaN is missing
    return pa.array(a)


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")


# ---------------------------------------------------------------------------
# Choosing columns


def _name(cols: Sequence[str], ref: Column, where: str, what: str) -> str:
    """The column `ref` names (a name, or an index counted from 0; negative from the end)."""
    if isinstance(ref, bool):
        ref = int(ref)
    if isinstance(ref, int):
        if -len(cols) <= ref < len(cols):
            return cols[ref]
        raise DataError(
            f"{where}: {what} column index {ref} is out of range (the file has {len(cols)} columns, 0 to {len(cols) - 1})"
        )
    if ref in cols:
        return ref
    listed = ", ".join(repr(c) for c in cols[:30]) + (", ..." if len(cols) > 30 else "")
    close = [c for c in cols if c.lower() == str(ref).lower()] or [closest(str(ref), cols)]
    hint = f"did you mean {close[0]!r}?" if close[0] is not None else None
    raise DataError(f"{where}: no {what} column named {ref!r}; the columns are {listed}", hint=hint)


def select(
    table,
    *,
    target: Column | None,
    columns: Sequence[Column] | None = None,
    drop: Sequence[Column] = (),
    where: str = "table",
) -> tuple[Any, str | None]:
    """(the feature columns as a Table, the target's name): `columns` keeps only those,
    `drop` removes those; the target is never a feature."""
    cols = table.column_names
    tname = _name(cols, target, where, "target") if target is not None else None
    if columns is not None and drop:
        raise DataError(f"{where}: give `columns` or `drop`, not both")
    if columns is not None:
        keep = [_name(cols, c, where, "selected") for c in columns]
        if tname in keep:
            keep.remove(tname)
        if not keep:
            raise DataError(f"{where}: `columns` names no feature column")
    else:
        gone = {_name(cols, c, where, "dropped") for c in drop}
        keep = [c for c in cols if c not in gone and c != tname]
        if not keep:
            raise DataError(f"{where}: no feature columns are left after dropping the target")
    return table.select(keep), tname


# ---------------------------------------------------------------------------
# The schema


@dataclass(frozen=True)
class ColumnSchema:
    name: str
    kind: str  # "numeric" | "categorical"
    fill: float | str | None  # what a missing cell becomes (None: no training value exists)
    categories: tuple[str, ...] = ()  # sorted training values of a categorical column

    @property
    def width(self) -> int:
        return 1 if self.kind == "numeric" else len(self.categories)


@dataclass(frozen=True)
class TargetSchema:
    name: str | None
    kind: str  # "classes" | "values"
    classes: tuple[Any, ...] = ()  # class index -> label (str, int or float), sorted
    mean: float | None = None  # normalize_target = standard: the model learns (y - mean) / std
    std: float | None = None

    @property
    def identity(self) -> bool:
        """Class labels that are already 0 .. k-1: nothing to map back."""
        return self.kind == "classes" and list(self.classes) == list(range(len(self.classes)))


@dataclass(frozen=True)
class Schema:
    """Everything fitted from the training rows that turns a raw row into the model's input."""

    columns: tuple[ColumnSchema, ...]
    target: TargetSchema | None
    missing: str = "mean"
    unknown: str = "ignore"

    @property
    def width(self) -> int:
        return sum(c.width for c in self.columns)

    @property
    def categorical(self) -> bool:
        return any(c.kind == "categorical" for c in self.columns)

    def feature_names(self) -> list[str]:
        out = []
        for c in self.columns:
            out += [c.name] if c.kind == "numeric" else [f"{c.name}={v}" for v in c.categories]
        return out

    def numeric_mask(self) -> np.ndarray:
        """True for the encoded features that are numbers (normalized), False for one-hot ones."""
        return np.array(
            [c.kind == "numeric" for c in self.columns for _ in range(c.width)], dtype=bool
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d = {"format": SCHEMA_FORMAT, **d, "width": self.width}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict, where: str = "schema") -> Schema:
        try:
            if d.get("format") != SCHEMA_FORMAT:
                raise DataError(
                    f"{where}: schema format {d.get('format')!r}, this fcspec reads {SCHEMA_FORMAT}"
                )
            cols = tuple(
                ColumnSchema(c["name"], c["kind"], c["fill"], tuple(c.get("categories", ())))
                for c in d["columns"]
            )
            for c in cols:
                if c.kind not in ("numeric", "categorical"):
                    raise ValueError(f"column {c.name!r} has kind {c.kind!r}")
            t = d.get("target")
            target = (
                TargetSchema(
                    t["name"], t["kind"], tuple(t.get("classes", ())), t.get("mean"), t.get("std")
                )
                if t
                else None
            )
            return cls(cols, target, d.get("missing", "mean"), d.get("unknown", "ignore"))
        except DataError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(
                f"{where}: not a valid fcspec schema ({type(e).__name__}: {e})"
            ) from None

    @classmethod
    def from_json(cls, text: str, where: str = "schema") -> Schema:
        try:
            d = json.loads(text)
        except ValueError as e:
            raise DataError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise DataError(f"{where}: not a valid fcspec schema (expected a JSON object)")
        return cls.from_dict(d, where)

    def differences(self, other: Schema) -> list[str]:
        """What differs between two schemas, in words (empty when they agree)."""
        out = []
        a, b = {c.name: c for c in self.columns}, {c.name: c for c in other.columns}
        if list(a) != list(b):
            out.append(f"columns {list(a)} vs {list(b)}")
        for name in a.keys() & b.keys():
            if a[name] != b[name]:
                if a[name].kind != b[name].kind:
                    out.append(f"column {name!r} is {a[name].kind} vs {b[name].kind}")
                elif a[name].categories != b[name].categories:
                    out.append(
                        f"column {name!r} has categories {list(a[name].categories)} vs {list(b[name].categories)}"
                    )
                else:
                    out.append(f"column {name!r} imputes {a[name].fill!r} vs {b[name].fill!r}")
        if self.target != other.target:
            out.append(f"target {self.target} vs {other.target}")
        if (self.missing, self.unknown) != (other.missing, other.unknown):
            out.append("missing/unknown settings differ")
        return out


def _kind(t, forced: bool) -> str:
    pa, _ = _pa()
    if forced:
        return "categorical"
    if (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_null(t)
    ):
        return "numeric"
    return "categorical"


def _plain(v: Any) -> Any:
    """A JSON-friendly label: ints stay ints, integral floats become ints."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return int(f) if f.is_integer() else f
    return v


def fit(
    features,
    target=None,
    *,
    target_name: str | None = None,
    task: str | None = None,
    train_rows: np.ndarray | None = None,
    categorical: Sequence[str] = (),
    missing: str = "mean",
    unknown: str = "ignore",
    normalize_target: str = "none",
    outputs: int | None = None,
    where: str = "table",
    line_offset: int = 2,
) -> Schema:
    """The schema of `features` (a pyarrow Table) fitted on `train_rows` (all when None),
    and of the `target` column (a pyarrow array) for `task` (classification, binary,
    regression).  Class labels come from every row, so a class that only the held-out
    rows hold still has a name; imputation values and target scaling from the training
    rows only.  `outputs` is the model's output width when written in the spec."""
    pa, pc = _pa()
    if missing not in MISSING:
        raise DataError(f"missing = {missing!r} (expected one of {', '.join(MISSING)})")
    if unknown not in UNKNOWN:
        raise DataError(f"unknown = {unknown!r} (expected one of {', '.join(UNKNOWN)})")
    train = features if train_rows is None else features.take(pa.array(train_rows))
    forced = set(categorical)
    cols = []
    for j, name in enumerate(features.column_names):
        col = train.column(j)
        kind = _kind(col.type, name in forced)
        if missing == "error":
            _refuse_missing(features.column(j), name, where, line_offset)
        if kind == "numeric":
            if col.null_count == len(col) or pc.count(col).as_py() == 0:
                raise DataError(
                    f"{where}: column {name!r} has no values in the training rows",
                    hint=f'drop it: `drop = ["{name}"]`',
                )
            if missing in ("mean", "error"):  # arrow's mean (float64, nulls skipped): no copy
                cols.append(ColumnSchema(name, "numeric", float(pc.mean(col).as_py())))
                continue
            values = _numpy(col).astype(np.float64)
            fill = {
                "mean": lambda v: float(np.nanmean(v)),
                "median": lambda v: float(np.nanmedian(v)),
                "zero": lambda v: 0.0,
                "most_frequent": _most_frequent_number,
                "error": lambda v: float(np.nanmean(v)),
            }[missing](values)
            cols.append(ColumnSchema(name, "numeric", fill))
        else:
            text = _as_text(col)
            counts = pc.value_counts(text.combine_chunks().drop_null()) if len(text) else []
            pairs = sorted(
                ((c["values"].as_py(), c["counts"].as_py()) for c in counts), key=lambda p: p[0]
            )
            if not pairs:
                raise DataError(
                    f"{where}: column {name!r} has no values in the training rows",
                    hint=f'drop it: `drop = ["{name}"]`',
                )
            cats = tuple(v for v, _ in pairs)
            top = max(pairs, key=lambda p: (p[1], [-ord(ch) for ch in p[0]]))[
                0
            ]  # ties: first in order
            cols.append(ColumnSchema(name, "categorical", top, cats))
    tschema = None
    if target is not None and task is not None:
        tschema = _fit_target(
            target, target_name, task, train_rows, normalize_target, outputs, where
        )
    return Schema(tuple(cols), tschema, missing, unknown)


def _most_frequent_number(v: np.ndarray) -> float:
    vals, counts = np.unique(v[~np.isnan(v)], return_counts=True)
    return float(vals[np.argmax(counts)])  # np.unique sorts: ties go to the smallest


def _refuse_missing(col, name: str, where: str, line_offset: int) -> None:
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(
            f"{where}: line {row + line_offset}, column {name!r}: missing cell "
            f"({col.null_count} in this column)",
            hint="missing = error refuses them; drop `missing` to impute the training rows' mean",
        )


def _fit_target(
    target, name: str | None, task: str, train_rows, normalize_target: str, outputs, where: str
) -> TargetSchema:
    pa, pc = _pa()
    numeric = _kind(target.type, False) == "numeric"
    if task in ("classification", "binary"):
        if numeric:
            v = _numpy(target).astype(np.float64)
            uniq = np.unique(v[~np.isnan(v)])
            if (
                task == "binary"
                and uniq.size
                and uniq.min() >= 0
                and uniq.max() <= 1
                and not (uniq.size == 2 and set(uniq) != {0.0, 1.0})
            ):
                return TargetSchema(name, "values")  # 0/1 labels or probabilities, as they are
            whole = bool(np.all(uniq == np.round(uniq)))
            if (
                task == "classification"
                and whole
                and outputs is not None
                and uniq.size
                and uniq.min() >= 0
                and uniq.max() < outputs
            ):
                classes: tuple = tuple(range(outputs))  # class ids as they are, for a fixed width
            else:
                classes = tuple(_plain(u) for u in uniq)
        else:
            classes = tuple(
                sorted(v for v in pc.unique(_as_text(target)).to_pylist() if v is not None)
            )
        if task == "binary" and len(classes) != 2:
            raise DataError(
                f"{where}: a binary loss needs two classes, but column {name!r} holds {len(classes)}"
                + (f" ({', '.join(map(repr, classes[:6]))})" if classes else ""),
                hint="for more classes use cross_entropy with `linear(outputs)`",
            )
        if task == "classification" and len(classes) < 2:
            raise DataError(f"{where}: the target column {name!r} holds a single class {classes!r}")
        return TargetSchema(name, "classes", classes)
    if task == "regression":
        if not numeric:
            bad = next(
                (v for v in target.to_pylist() if v is not None and not _is_number(str(v))), None
            )
            raise DataError(
                f"{where}: the target column {name!r} holds text ({bad!r}); a regression loss needs numbers",
                hint="for classes use `loss cross_entropy` and `linear(outputs)`",
            )
        mean = std = None
        if normalize_target == "standard":
            v = _numpy(target).astype(np.float64)
            if train_rows is not None:
                v = v[train_rows]
            mean, std = float(np.mean(v)), float(np.std(v))
            std = std if std > 0 else 1.0
        return TargetSchema(name, "values", (), mean, std)
    raise DataError(f"{where}: a {task} loss cannot train on one target column of a table")


def _compact_dtype(schema: Schema, features):
    """uint8 / int16 when every encoded value is a small whole number held exactly (one-hot
    0/1, integer columns without missing cells), else float32."""
    pa, _ = _pa()
    columns = dict(zip(features.column_names, features.columns))
    widest = np.dtype(np.uint8)
    for c in schema.columns:
        col = columns.get(c.name)
        if c.kind != "numeric" or col is None:
            continue
        t = col.type
        if col.null_count or not (pa.types.is_uint8(t) or pa.types.is_int16(t)):
            return np.dtype(np.float32)
        if pa.types.is_int16(t):
            widest = np.dtype(np.int16)
    return widest


def _copies_as_block(col) -> bool:
    """A column of plain numbers without missing cells: `_copy_numbers` takes it."""
    pa, _ = _pa()
    t = col.type
    return not col.null_count and (
        pa.types.is_integer(t) or (pa.types.is_floating(t) and not pa.types.is_float16(t))
    )


def _copy_numbers(x: np.ndarray, features, group: list[tuple[int, str]]) -> None:
    """Columns of one Arrow type into their places `j` of x, for [(j, name)]: one
    row-major block per record batch (`RecordBatch.to_tensor`) rather than one strided
    copy per column, which for MNIST's 784 columns is most of the encoding's time.
    NumPy casts each block to x's dtype exactly as it would cast each column."""
    pos = [j for j, _ in group]
    lo, hi = pos[0], pos[-1] + 1
    where = slice(lo, hi) if pos == list(range(lo, hi)) else np.asarray(pos)
    r = 0
    for batch in features.select([name for _, name in group]).to_batches():
        k = batch.num_rows
        if k:
            x[r : r + k, where] = batch.to_tensor(row_major=True).to_numpy()
        r += k


def _numpy(col) -> np.ndarray:
    """A column's values as NumPy.  Plain numbers go through DLPack: `to_numpy` passes
    pyarrow's pandas shim, which imports pandas (a quarter of a second) when it is installed."""
    if col.num_chunks and _copies_as_block(col):
        parts = [np.from_dlpack(c) for c in col.chunks]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
    return col.to_numpy(zero_copy_only=False)


def encode(
    schema: Schema,
    features,
    *,
    where: str = "table",
    line_offset: int = 2,
    compact: bool = False,
) -> tuple[np.ndarray, dict]:
    """float32 [N, schema.width] and a report `{"imputed": {col: n}, "unseen": {col: n}}`.

    Columns are found by name; a column the schema has and the table lacks is an
    error, extra columns are ignored (a prediction file may carry ids or the target).
    With `compact`, a table of small whole numbers (MNIST's pixels) comes back as
    uint8 / int16, which training converts batch by batch (`data.Split`): the same
    float32 values, a quarter of the memory.
    """
    pa, pc = _pa()
    n = features.num_rows
    x = np.empty((n, schema.width), _compact_dtype(schema, features) if compact else np.float32)
    report: dict[str, dict[str, int]] = {"imputed": {}, "unseen": {}}
    names = features.column_names
    columns = dict(zip(names, features.columns))
    blocks: dict[Any, list[tuple[int, str]]] = {}  # Arrow type -> [(j, name)] for _copy_numbers
    j = 0
    for c in schema.columns:
        col = columns.get(c.name)
        if col is None:
            _name(names, c.name, where, "feature")  # raises, with the columns and did-you-mean
        if col.null_count:
            if schema.missing == "error":
                _refuse_missing(col, c.name, where, line_offset)
            report["imputed"][c.name] = col.null_count
        if c.kind == "numeric":
            if not (
                pa.types.is_integer(col.type)
                or pa.types.is_floating(col.type)
                or pa.types.is_null(col.type)
                or pa.types.is_decimal(col.type)
            ):
                bad = next(
                    (v for v in col.to_pylist() if v is not None and not _is_number(str(v))), None
                )
                raise DataError(
                    f"{where}: column {c.name!r} was numbers in training but holds {bad!r} here"
                )
            if _copies_as_block(col):
                blocks.setdefault(col.type, []).append((j, c.name))
            else:
                if col.null_count:
                    col = pc.fill_null(col.cast(pa.float64()), c.fill)
                x[:, j] = col.to_numpy(zero_copy_only=False)
            j += 1
        else:
            text = _as_text(col)
            if col.null_count:
                text = pc.fill_null(text, c.fill)
            idx = pc.index_in(text, value_set=pa.array(c.categories, pa.string())).to_numpy(
                zero_copy_only=False
            )
            unseen = np.isnan(idx) if idx.dtype.kind == "f" else np.zeros(n, bool)
            if unseen.any():
                report["unseen"][c.name] = int(unseen.sum())
                if schema.unknown == "error":
                    row = int(np.flatnonzero(unseen)[0])
                    raise DataError(
                        f"{where}: line {row + line_offset}, column {c.name!r}: category "
                        f"{text[row].as_py()!r} was not in the training rows "
                        f"(known: {', '.join(map(repr, c.categories[:10]))})",
                        hint="unknown = error refuses them; without it they encode as all zeros",
                    )
            block = x[:, j : j + c.width]
            block[...] = 0
            ok = ~unseen
            block[np.flatnonzero(ok), idx[ok].astype(np.int64)] = 1
            j += c.width
    for group in blocks.values():
        _copy_numbers(x, features, group)
    return x, report


def encode_target(
    schema: Schema, target, *, where: str = "table", line_offset: int = 2
) -> np.ndarray:
    """Class ids (int64 [N]) or values (float64 [N]) of a target column, by the schema."""
    pa, pc = _pa()
    t = schema.target
    if t is None:
        raise DataError(f"{where}: the schema has no target")
    if t.kind == "values":
        if _kind(target.type, False) != "numeric":
            raise DataError(
                f"{where}: the target column {t.name!r} holds text; the model predicts numbers"
            )
        return _numpy(target).astype(np.float64)
    if all(isinstance(c, str) for c in t.classes):
        labels = _as_text(target)
        idx = pc.index_in(labels, value_set=pa.array(list(t.classes), pa.string())).to_numpy(
            zero_copy_only=False
        )
    else:
        v = _numpy(target).astype(np.float64)
        known = np.asarray(t.classes, np.float64)
        pos = np.searchsorted(known, v)
        pos = np.clip(pos, 0, len(known) - 1)
        idx = np.where(known[pos] == v, pos, np.nan)
        labels = target
    bad = np.isnan(idx) if idx.dtype.kind == "f" else np.zeros(len(idx), bool)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: line {row + line_offset}, target {t.name!r}: label {labels[row].as_py()!r} is not "
            f"one of the training classes ({', '.join(map(repr, t.classes[:10]))})"
        )
    return idx.astype(np.int64)


def class_names(schema: Schema | None, ids: np.ndarray) -> list:
    """Class labels for class ids (the ids themselves without a schema)."""
    if schema is None or schema.target is None or schema.target.kind != "classes":
        return [int(i) for i in ids]
    classes = schema.target.classes
    return [classes[int(i)] for i in ids]


def read_schema(path: str | os.PathLike) -> Schema | None:
    """The schema saved at `path` (a run folder's schema.json), or None when there is none."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read it: {e}") from None
    return Schema.from_json(text, str(path))


def summary(report: dict, schema: Schema) -> list[str]:
    """Readable lines about what encoding did: imputation and unseen categories."""
    out = []
    imp = report.get("imputed", {})
    if imp:
        cells = sum(imp.values())
        how = {c.name: c for c in schema.columns}
        detail = ", ".join(
            f"{k} {v} with {how[k].fill:.6g}"
            if isinstance(how[k].fill, float)
            else f"{k} {v} with {how[k].fill!r}"
            for k, v in imp.items()
        )
        out.append(
            f"imputed {cells} cells in {len(imp)} column{'s' if len(imp) != 1 else ''} ({detail})"
        )
    un = report.get("unseen", {})
    if un:
        out.append(
            f"{sum(un.values())} cells hold categories unseen in training, encoded as all zeros ("
            + ", ".join(f"{k} {v}" for k, v in un.items())
            + ")"
        )
    return out


def merge_reports(*reports: dict) -> dict:
    out: dict[str, dict[str, int]] = {"imputed": {}, "unseen": {}}
    for r in reports:
        for key in out:
            for k, v in r.get(key, {}).items():
                out[key][k] = out[key].get(k, 0) + v
    return out


__all__ = [
    "MISSING_TOKENS",
    "ColumnSchema",
    "Schema",
    "TargetSchema",
    "class_names",
    "encode",
    "encode_target",
    "fit",
    "read_csv",
    "read_parquet",
    "read_schema",
    "select",
    "sniff_delimiter",
    "summary",
    "to_table",
]
