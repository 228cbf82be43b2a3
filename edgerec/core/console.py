"""Other libraries' output, kept off edgerec's console.

The converters, quantizers and runtimes edgerec drives print a lot that is not about the user's
job: litert-torch's conversion steps, absl / TensorFlow C++ log lines, torch's TracerWarnings,
ONNX Runtime's "please consider pre-processing", ai-edge-quantizer's progress bar, XNNPACK's
"Created delegate". `third_party(what)` runs such a call with all of it captured: Python's
stdout, stderr, warnings and logging, and the process's file descriptors 1 and 2, where C++
libraries write. Nothing is lost: with `--verbose` (or EDGEREC_VERBOSE=1) nothing is captured,
and when the call fails, the captured lines are printed before edgerec's one-line error, since
they are what explains it.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

VERBOSE_ENV = "EDGEREC_VERBOSE"
TAIL_LINES = 40  # of captured output shown when the call fails


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def set_verbose(on: bool) -> None:
    os.environ[VERBOSE_ENV] = "1" if on else "0"


@contextlib.contextmanager
def third_party(what: str) -> Iterator[None]:
    """Capture everything `what` (a third-party call) prints; see the module docstring."""
    if verbose():
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with tempfile.TemporaryFile() as sink:
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        text = io.TextIOWrapper(
            os.fdopen(os.dup(sink.fileno()), "wb"), encoding="utf-8", errors="replace", line_buffering=True
        )
        streams = sys.stdout, sys.stderr
        try:
            for fd in (1, 2):
                os.dup2(sink.fileno(), fd)
            sys.stdout = sys.stderr = text
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: text.write(
                    warnings.formatwarning(message, category, filename, lineno, line)
                )
                yield
        except BaseException as exc:
            _restore(saved, streams, text)
            if getattr(exc, "expected", False):  # a failure edgerec handles: its output is noise
                raise
            sink.seek(0)
            lines = sink.read().decode("utf-8", "replace").splitlines()
            if lines:
                stream = sys.stderr
                stream.write(f"--- output of {what} (last {min(len(lines), TAIL_LINES)} of {len(lines)} lines) ---\n")
                stream.write("\n".join(lines[-TAIL_LINES:]) + "\n")
                stream.flush()
            raise
        else:
            _restore(saved, streams, text)


def _restore(saved: dict, streams: tuple, text) -> None:
    with contextlib.suppress(Exception):
        text.flush()
    # A library that made its logging handler during the capture (ORT's converter tools do, on
    # first import) would keep writing to the closed capture: "Logging error ... I/O operation
    # on closed file" on its next call. Point such handlers at the real stderr.
    import logging

    for logger in [logging.getLogger(), *logging.root.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream is text:
                handler.setStream(streams[1])
    for fd, copy in saved.items():
        os.dup2(copy, fd)
        os.close(copy)
    sys.stdout, sys.stderr = streams
    with contextlib.suppress(Exception):
        text.close()


def quietly(what: str):
    """Decorator: the whole function runs inside `third_party(what)`."""

    def wrap(function):
        import functools

        @functools.wraps(function)
        def run(*args, **kwargs):
            with third_party(what):
                return function(*args, **kwargs)

        return run

    return wrap
