"""Finding, and when needed downloading, the four canonical MNIST files.

`mnist_files(split)` returns the paths of an images file and a labels file in
the IDX format (see `data.read_idx`).  It looks, per file, in

1. `$FCSPEC_DATA/mnist/` (only when `FCSPEC_DATA` is set), then
2. the user cache `$XDG_CACHE_HOME/fcspec/mnist/` (or `~/.cache/fcspec/mnist/`),

accepting the canonical `.gz` name or the unpacked name.  A file found nowhere
is downloaded into the cache from a mirror list (`FCSPEC_MNIST_MIRRORS`,
comma separated, overrides the default), its MD5 checked against the published
checksum, and written atomically: a partial or corrupt download never takes
the final name.  Every failure is one `DataError` that lists the URLs tried and
the folders where the files can be put by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from . import io as fio
from .errors import DataError

# split -> (images, labels), the canonical gzipped file names.
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# The published checksums of the .gz files (the ones torchvision checks).
MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

# yann.lecun.com itself now refuses most automated downloads, so it is not listed.
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

TIMEOUT_S = 30.0
_CHUNK = 1 << 16


def data_dir() -> Path | None:
    """`$FCSPEC_DATA/mnist`, or None when the variable is unset or empty."""
    root = os.environ.get("FCSPEC_DATA", "").strip()
    return Path(root).expanduser() / "mnist" if root else None


def cache_dir() -> Path:
    """The per-user download folder, following the XDG base directory spec."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fcspec" / "mnist"


def search_dirs() -> list[Path]:
    dirs = [d for d in (data_dir(), cache_dir()) if d is not None]
    return list(dict.fromkeys(dirs))  # FCSPEC_DATA may point into the cache


def mirrors() -> list[str]:
    env = os.environ.get("FCSPEC_MNIST_MIRRORS", "")
    urls = [u.strip() for u in env.split(",") if u.strip()] or list(DEFAULT_MIRRORS)
    return [u if u.endswith("/") else u + "/" for u in urls]


def _candidates(gz_name: str) -> list[str]:
    """Names a file may have on disk: the canonical .gz, unpacked, or the
    historical dotted form that some unpackers (7-Zip) restore."""
    plain = gz_name[: -len(".gz")]
    head, kind, rest = plain.split("-", 2)  # train-images-idx3-ubyte -> train-images.idx3-ubyte
    dotted = f"{head}-{kind}.{rest}"
    return [gz_name, plain, dotted]


def find_file(gz_name: str) -> Path | None:
    for folder in search_dirs():
        for name in _candidates(gz_name):
            p = folder / name
            if p.is_file():
                return p
    return None


def mnist_files(split: str) -> tuple[Path, Path]:
    """(images, labels) paths for `split` ("train" or "test"), downloading if needed."""
    if split not in FILES:
        raise DataError(f"mnist: unknown split {split!r}; expected 'train' or 'test'")
    names = FILES[split]
    return tuple(find_file(name) or download(name, hint_names=names) for name in names)  # type: ignore[return-value]


def _where_to_put(names: tuple[str, ...] | list[str]) -> str:
    folders = [str(d) for d in search_dirs()]
    if data_dir() is None:
        folders.insert(0, "$FCSPEC_DATA/mnist (when FCSPEC_DATA is set)")
    return f"put {' and '.join(names)} (from any MNIST mirror) into one of: " + ", ".join(folders)


def download(name: str, *, hint_names: tuple[str, ...] | None = None) -> Path:
    """Fetch one canonical file into the cache from the first mirror that serves
    it with the right checksum; return its path.  `hint_names`: the files the
    error's hint tells the user to fetch by hand (both files of a split)."""
    if name not in MD5:
        raise DataError(f"mnist: {name!r} is not one of the MNIST files")
    hint = _where_to_put(hint_names or (name,))
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"mnist: cannot create the download folder {folder}: {e.strerror or e}",
            hint=hint,
        ) from None
    failures = []
    for base in mirrors():
        url = base + name
        try:
            return _fetch(url, folder / name, MD5[name], hint)
        except _FetchError as e:
            failures.append(f"{url}: {e}")
    tried = "\n  ".join(failures)
    raise DataError(
        f"mnist: could not download {name}; tried:\n  {tried}",
        hint=hint + " (or set FCSPEC_MNIST_MIRRORS to a working mirror)",
    )


class _FetchError(Exception):
    """One mirror failed; the caller moves on to the next."""


def _fetch(url: str, dest: Path, md5: str, hint: str) -> Path:
    from tqdm import tqdm  # imported here: most runs never download

    tmp: Path | None = None
    try:
        fd, tmp_name = fio.temp_beside(dest, ".part")
        tmp = Path(tmp_name)
        with os.fdopen(fd, "wb") as out:
            try:
                resp = urllib.request.urlopen(url, timeout=TIMEOUT_S)
            except urllib.error.HTTPError as e:
                raise _FetchError(f"HTTP {e.code} {e.reason}") from None
            except urllib.error.URLError as e:
                raise _FetchError(f"unreachable ({e.reason})") from None
            except (OSError, ValueError) as e:  # timeouts, resets, malformed URLs
                raise _FetchError(str(e) or type(e).__name__) from None
            with resp:
                total = resp.headers.get("Content-Length")
                total = int(total) if total and total.isdigit() else None
                digest = hashlib.md5()
                got = 0
                bar = tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=dest.name,
                    file=sys.stderr,
                    disable=not _stderr_is_tty(),
                    leave=False,
                )
                with bar:
                    while True:
                        try:
                            chunk = resp.read(_CHUNK)
                        except (OSError, ValueError) as e:  # includes http.client.IncompleteRead
                            raise _FetchError(f"connection broken after {got} bytes: {e}") from None
                        if not chunk:
                            break
                        out.write(chunk)
                        digest.update(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
            if total is not None and got != total:
                raise _FetchError(f"truncated: got {got} of {total} bytes")
            if digest.hexdigest() != md5:
                raise _FetchError(
                    f"MD5 checksum mismatch (got {digest.hexdigest()}, expected {md5}); file discarded"
                )
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        fio.fsync_dir(dest.parent)
        return dest
    except OSError as e:  # writing failed: disk full, permissions
        raise DataError(f"mnist: cannot write {dest}: {e.strerror or e}", hint=hint) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
