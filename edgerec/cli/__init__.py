"""The `edgerec` command line: a thin Typer layer over the library API.

Only typer and the standard library are imported here; each command imports its stage inside the
function, so `edgerec --help` never loads torch, onnxruntime or litert.
"""

from edgerec.cli.main import app

__all__ = ["app"]
