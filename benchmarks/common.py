"""What the benchmark scripts share: which machine they ran on, and writing their section of a doc."""

from __future__ import annotations

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
