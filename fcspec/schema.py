"""The schema of a checkpoint's JSON record, checked before a field of it is used.

A checkpoint is written by fcspec, but `--resume` may be handed a damaged or
foreign file: a record whose `epoch` is the string "2" or -3, a list where a
record belongs, a history of strings, structures nested thousands deep.  Each
of those must be one clear `DataError`, never a traceback from deep inside the
loop and never a silent wrong start.  The rules are plain data below; `check`
walks a value against them.
"""

from __future__ import annotations

from typing import Any

from .errors import DataError

MAX_DEPTH = 32  # optimizer and schedule states are a few levels deep; deeper is damage


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    # NaN and infinity are allowed: a run's figures may hold them (e.g. an empty validation)
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(v: Any, where: str) -> None:
    if not _is_number(v):
        raise DataError(f"{where} must be a number, not {v!r}")


def _packed(v: Any, where: str, depth: int = 0) -> None:
    """A state dict as `train._pack` writes it: arrays by name, dicts and tuples tagged."""
    if depth > MAX_DEPTH:
        raise DataError(f"{where}: nested more than {MAX_DEPTH} levels deep")
    if v is None or isinstance(v, (bool, int, float, str)):
        return
    if isinstance(v, list):
        for i, item in enumerate(v):
            _packed(item, f"{where}[{i}]", depth + 1)
        return
    if not isinstance(v, dict) or len(v) != 1:
        raise DataError(f"{where}: not a stored state (a tagged record of one entry)")
    ((tag, body),) = v.items()
    if tag in ("__array__", "__scalar__"):
        if not isinstance(body, str):
            raise DataError(f"{where}: {tag} must name an array")
    elif tag == "__dict__":
        if not isinstance(body, list):
            raise DataError(f"{where}: __dict__ must be a list of [key, value] pairs")
        for i, pair in enumerate(body):
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                raise DataError(f"{where}: __dict__ entry {i} is not a [key, value] pair")
            _packed(pair[1], f"{where}.{pair[0]}", depth + 1)
    elif tag == "__tuple__":
        if not isinstance(body, list):
            raise DataError(f"{where}: __tuple__ must be a list")
        for i, item in enumerate(body):
            _packed(item, f"{where}[{i}]", depth + 1)
    else:
        raise DataError(f"{where}: unknown entry {tag!r}")


def check_history(v: Any, epoch: int, where: str = "history") -> None:
    """Per-epoch records, epochs increasing up to `epoch`, every figure a number."""
    _history(v, where, epoch)


def _history(v: Any, where: str, epoch: int) -> None:
    if not isinstance(v, list):
        raise DataError(f"{where} must be a list of per-epoch records, not {type(v).__name__}")
    last = 0
    for i, m in enumerate(v):
        at = f"{where}[{i}]"
        if not isinstance(m, dict):
            raise DataError(f"{at} must be a record, not {type(m).__name__}")
        e = m.get("epoch")
        if not _is_int(e) or not last < e <= epoch:
            raise DataError(f"{at}: 'epoch' must be a whole number in ({last}, {epoch}], not {e!r}")
        last = e
        for k, x in m.items():
            if not isinstance(k, str) or not _is_number(x):
                raise DataError(f"{at}: {k!r} must be a number, not {x!r}")


# field -> (required, rule); a rule is a callable(value, where, meta) raising DataError
def _whole(low: int):
    def rule(v: Any, where: str, meta: dict) -> None:
        if not _is_int(v) or v < low:
            raise DataError(f"{where} must be a whole number >= {low}, not {v!r}")

    return rule


def _text(v: Any, where: str, meta: dict) -> None:
    if not isinstance(v, str):
        raise DataError(f"{where} must be text, not {v!r}")


def _flag(v: Any, where: str, meta: dict) -> None:
    if not isinstance(v, bool):
        raise DataError(f"{where} must be true or false, not {v!r}")


def _best_epoch(v: Any, where: str, meta: dict) -> None:
    if v is not None and (not _is_int(v) or not 1 <= v <= meta["epoch"]):
        raise DataError(f"{where} must be null or an epoch in [1, {meta['epoch']}], not {v!r}")


CHECKPOINT_RECORD = {
    "format": (True, _whole(1)),
    "spec_sha256": (True, _text),
    "spec_name": (False, _text),
    "spec_path": (False, _text),
    "epoch": (True, _whole(0)),
    "seed": (True, _whole(0)),
    "n_train": (True, _whole(1)),
    "stopped_early": (False, _flag),
    "stopped_by_callback": (False, _flag),
    "best_epoch": (False, _best_epoch),
    "history": (True, lambda v, where, meta: _history(v, where, meta["epoch"])),
    "optimizer": (True, lambda v, where, meta: _packed(v, where)),
    "schedule": (True, lambda v, where, meta: _packed(v, where)),
    "early_stop": (False, lambda v, where, meta: _packed(v, where)),
    "data_sha256": (False, _text),
    "seconds_total": (False, lambda v, where, meta: _number(v, where)),
}


def check_record(meta: Any, rules: dict = CHECKPOINT_RECORD) -> dict:
    """`meta` if it follows `rules` (in order: later rules may read earlier fields)."""
    if not isinstance(meta, dict):
        raise DataError(f"its record is a {type(meta).__name__}, not a record of fields")
    for key, (required, rule) in rules.items():
        if key not in meta:
            if required:
                raise DataError(f"its record lacks {key!r}")
            continue
        rule(meta[key], repr(key), meta)
    return meta
