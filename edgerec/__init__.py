"""edgerec: turn a fine-tuned BERT recommender into a small model that runs on the device.

Importing this package is cheap on purpose: torch, transformers, onnxruntime and litert are
imported inside the functions that need them, so `edgerec --help` stays instant.
"""

__version__ = "0.1.0"
