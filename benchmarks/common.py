"""What the benchmark scripts share: which machine they ran on, and writing their section of a doc."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(
    threads: int | str, libraries: dict[str, str], load_start: float | None = None
) -> str:
    """CPU, cores, load and versions for a section's Machine line (`threads`: a count per
    engine, or words when the engines differ).

    `libraries` maps a display name to an importable module ("scikit-learn":
    "sklearn"); the ones not installed are left out.  Other work on the machine
    slows every engine, so the 1-minute load average says how quiet the run was.
    """
    import numpy as np

    parts = [f"Python {platform.python_version()}", f"NumPy {np.__version__}"]
    for name, module in libraries.items():
        try:
            parts.append(f"{name} {__import__(module).__version__}")
        except ImportError:
            pass
    load = ""
    if hasattr(os, "getloadavg"):
        start = "" if load_start is None else f" {load_start:.2f} at the start and"
        load = f", 1-minute load average{start} {os.getloadavg()[0]:.2f} at the end"
    threads = threads if isinstance(threads, str) else f"{threads} thread(s) per engine"
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs{load}, {threads}; " + ", ".join(parts)


def replace_section(path: Path, body: str, begin: str, end: str) -> None:
    """Replace the text between the markers (adding them at the end if absent); nothing else changes.

    Each benchmark owns one marked section of docs/performance.md, so one script
    never overwrites another's figures.
    """
    section = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Performance\n"
    if begin in text and end in text and text.index(begin) < text.index(end):
        start, stop = text.index(begin), text.index(end) + len(end)
        text = text[:start] + section + text[stop:]
    elif begin in text or end in text:
        sys.exit(f"{path}: only one of {begin} / {end} is present; fix the file by hand")
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def user_env() -> dict[str, str]:
    """The environment for a timed command-line run: this one, with Python's bytecode cache
    on.  With PYTHONDONTWRITEBYTECODE set (some shells and containers set it) every run
    would recompile fcspec's modules from source, about 0.1 s that no installed copy pays
    (pip compiles site-packages; an editable install writes its cache on first import, so
    one untimed warm-up run fills it)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
