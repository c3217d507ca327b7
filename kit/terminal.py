"""Output that outlives its reader: `kit pipeline | head -3` must not stop the pipeline, `kit summary | head -1`
must end quietly.

When the reader of a pipe goes away, the next write raises BrokenPipeError; from then on the stream points at the
null device, so the work goes on and the interpreter's last flush at exit does not fail again (with a traceback).
"""
from __future__ import annotations

import os
import sys


def silence(name: str) -> None:
    """Point sys.<name> ('stdout' or 'stderr') at the null device, keeping its file descriptor."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, getattr(sys, name).fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):  # a stream without a file descriptor (captured by a test)
        setattr(sys, name, open(os.devnull, "w"))


class Terminal:
    """sys.stdout (or sys.stderr) for progress lines and cell output until its reader goes away (`kit pipeline |
    head`): from then on nothing is printed there, the stream pointing at the null device (so the interpreter's
    last flush is quiet too), and the pipeline goes on."""

    def __init__(self, name: str):
        self.name = name

    def write(self, text: str) -> int:
        try:
            getattr(sys, self.name).write(text)
            getattr(sys, self.name).flush()
        except BrokenPipeError:
            self._silence()
        return len(text)

    def flush(self) -> None:
        try:
            getattr(sys, self.name).flush()
        except BrokenPipeError:
            self._silence()

    def _silence(self) -> None:
        silence(self.name)


STDOUT, STDERR = Terminal("stdout"), Terminal("stderr")  # what the pipeline and its kernels print through
