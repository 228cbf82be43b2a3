"""edgerec: turn a fine-tuned BERT recommender into a small model that runs on the device.

The stages are functions of this package (`edgerec.data`, `edgerec.teacher`, `edgerec.distill`,
`edgerec.prune`, `edgerec.export`, `edgerec.quantize`, `edgerec.validate`, `edgerec.build`), with
the options of the commands of the same names, and `edgerec.Recommender` answers
`recommend(history, k)` from a bundle: see `edgerec.api`.

Importing this package is cheap on purpose: the API is loaded on first use, and torch,
transformers, onnxruntime and litert are imported inside the functions that need them, so
`edgerec --help` stays instant.
"""

from edgerec.core.version import __version__

API = (
    "data",
    "teacher",
    "import_teacher",
    "distill",
    "prune",
    "export",
    "quantize",
    "validate",
    "build",
    "Recommender",
    "EdgerecError",
)
__all__ = ["__version__", *API]


def __getattr__(name: str):
    """`edgerec.distill` and the other API names, loaded from `edgerec.api` when first asked for."""
    if name in API:
        import edgerec.api

        return getattr(edgerec.api, name)
    raise AttributeError(f"module 'edgerec' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *API])
