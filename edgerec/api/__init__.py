"""edgerec's Python API: the pipeline's stages as functions, and the app's side of a bundle.

    import edgerec

    edgerec.data(out="runs/data")                      # MovieLens-100K, fetched once
    edgerec.teacher("runs/data", "runs/teacher")
    edgerec.distill("runs/teacher", "runs/data", "runs/student")
    edgerec.export("arm64", "runs/student", "runs/data")
    edgerec.quantize("arm64")
    report = edgerec.validate("arm64", "dist/arm64-int8")
    edgerec.Recommender("dist/arm64-int8").recommend(["50", "181"], k=10)

Every function takes the options of the command of the same name (`edgerec distill --help`)
under the same names, writes the same artifact, and returns what the command prints with
`--json`. Bad input raises `edgerec.EdgerecError` with the one line the command would print.
`edgerec.build` runs every stage, as `edgerec build` does.
"""

from edgerec.api.compress import distill, prune
from edgerec.api.prepare import data, import_teacher, teacher
from edgerec.api.ship import build, export, quantize, validate
from edgerec.core.errors import EdgerecError
from edgerec.stages.recommend import Recommender

# the names `import edgerec` gives (edgerec.API; tests/api/test_api.py holds the two together)
__all__ = [
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
]
