"""Progress on the caller's terminal: one line at the bottom of stderr,
redrawn in place (environment builds, sync_dir). Nothing is drawn when
stderr is not a terminal, so logs and pipes see only the plain lines."""

from __future__ import annotations

import os
import threading
import time
from typing import TextIO

_CLEAR = "\r\x1b[K"


def is_terminal(stream: TextIO) -> bool:
    """Whether stream is a terminal a progress line may be drawn on."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):  # replaced or closed streams
        return False


def _width(stream: TextIO) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    return max(columns, 20) if columns else 80  # 0: a terminal that does not say


class StatusLine:
    """A line at the bottom of a terminal stream that show() replaces,
    clear() erases (before other output is written) and done() leaves in
    place. Safe to use from several threads."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.text = ""
        self.shown = False
        self._lock = threading.Lock()

    def show(self, text: str) -> None:
        with self._lock:
            self.text = text
            self._draw()

    def redraw(self) -> None:
        with self._lock:
            if self.text:
                self._draw()

    def _draw(self) -> None:
        text = self.text[: _width(self.stream) - 1]
        self.stream.write(_CLEAR + text)
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        with self._lock:
            if self.shown:
                self.stream.write(_CLEAR)
                self.stream.flush()
                self.shown = False

    def done(self) -> None:
        """Ends the line where it stands: later output goes below it."""
        with self._lock:
            if self.shown:
                self.stream.write("\n")
                self.stream.flush()
            self.shown = False
            self.text = ""


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class TransferBar:
    """A progress bar of bytes and files for sync_dir, redrawn at most
    every `interval` seconds."""

    def __init__(self, line: StatusLine, label: str, total_bytes: int, total_files: int, interval: float = 0.1) -> None:
        self.line = line
        self.label = label
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.interval = interval
        self._last = 0.0

    def update(self, sent_bytes: int, sent_files: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        frac = 1.0 if self.total_bytes == 0 else min(sent_bytes / self.total_bytes, 1.0)
        width = 24
        filled = int(frac * width)
        bar = "#" * filled + "-" * (width - filled)
        self.line.show(
            f"atoll: {self.label} [{bar}] {frac:4.0%} {_size(sent_bytes)} / {_size(self.total_bytes)}, "
            f"{sent_files}/{self.total_files} files"
        )
