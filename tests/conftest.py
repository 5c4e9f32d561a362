"""Shared test fixtures: the golden-file mechanism, repository paths and finite differences.

Golden files hold text (IR dumps, layer tables, error messages, ONNX graphs).
They are compared exactly; `pytest --update-golden` rewrites them, and the
diff of that rewrite is the review.
"""

from __future__ import annotations

import os
from pathlib import Path

# One BLAS thread for the suite and every CLI subprocess it starts (set before NumPy loads).
# The tests' matrices are small, and on a shared machine OpenBLAS's spinning worker threads made
# a part of the suite 9x slower (97 s against over 900 s at load 20).  Results are reproducible
# per thread count (docs/training.md), and every test compares runs made in the same process
# or environment, so none depends on the count.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest

try:  # NumPy may have been imported by a pytest plugin before this file: limit it at run time too
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(os.environ["OPENBLAS_NUM_THREADS"]), "blas")
except ImportError:
    pass

ROOT = Path(__file__).resolve().parent.parent


def numerical_gradient(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences (f(x + h e_i) - f(x - h e_i)) / 2h of the scalar `f()`, which reads
    the float64 array `x`; each entry of `x` is moved in place and restored exactly."""
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        x0 = x[i]
        x[i] = x0 + h
        up = f()
        x[i] = x0 - h
        down = f()
        x[i] = x0
        num[i] = (up - down) / (2 * h)
    return num


def _shared_data() -> Path:
    """The workplace's shared/data (real MNIST): beside the checkout, as CI lays it out."""
    env = os.environ.get("FCSPEC_SHARED_DATA")
    candidates = ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]
    for c in candidates:
        if (c / "mnist").is_dir():
            return c
    return candidates[0]


SHARED_DATA = _shared_data()
GOLDEN = ROOT / "tests" / "golden"
SPECS = sorted((ROOT / "specs").glob("*.fc"))


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/ from the current output (then read the diff)",
    )


@pytest.fixture
def golden(request):
    """golden(relative_path, text): compare text with the file, or rewrite it with --update-golden."""
    update = request.config.getoption("--update-golden")

    def check(rel: str, text: str) -> None:
        path = GOLDEN / rel
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        assert path.exists(), (
            f"missing golden file {path}; run pytest --update-golden and review the diff"
        )
        expected = path.read_text(encoding="utf-8")
        assert text == expected, f"output differs from {path} (pytest --update-golden rewrites it)"

    return check


def run_on_terminal(argv: list[str], columns: int = 120) -> tuple[int, str]:
    """(exit code, everything written) of `argv` run with stdin, stdout and stderr on a
    pseudo-terminal `columns` wide (tqdm draws nothing on a terminal of width 0)."""
    import fcntl
    import pty
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child
        try:
            fcntl.ioctl(2, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


@pytest.fixture
def in_root(monkeypatch):
    """Run from the repository root, so paths in messages read `specs/x.fc`."""
    monkeypatch.chdir(ROOT)
    return ROOT
