"""ExecuTorch: `.pte` programs with the XNNPACK backend (`export`), int8 through PT2E with
XNNPACK's quantizer (`int8`), run by ExecuTorch's runtime (`runtime`). Needs the `executorch`
extra (pip install 'edgerec[executorch]'); profiles offer it (`offers`), and a build writes it
when asked (`--formats`).

Not yet: the step model (a profile with step_model writes ONNX/TFLite steps only) and the text
teacher.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerec.core.errors import EdgerecError
from edgerec.core.graphs import scoring_graph
from edgerec.formats.base import Int8Plan, ModelFormat
from edgerec.formats.executorch.export import exported, write_program, write_pte
from edgerec.formats.executorch.int8 import linear_units, quantize_pte
from edgerec.formats.executorch.runtime import ExecuTorchScorer, load_method


def _open(path, meta, target, runtime):
    return ExecuTorchScorer(path, meta["max_len"], meta["num_items"], target.threads)


class ExecuTorchFormat(ModelFormat):
    name = "executorch"
    suffix = "pte"
    runtimes = {"executorch": _open}
    fixed_batch = 1  # torch.export fixes the shape: one call per user, as an app makes them
    parity_users = 128
    step_parity_users = 16
    writes_step = False

    def missing(self) -> str | None:
        try:
            import executorch.exir  # noqa: F401
            import executorch.runtime  # noqa: F401
        except ImportError:
            return "the ExecuTorch format needs the executorch extra (pip install 'edgerec[executorch]')"
        return None

    def input_dtype(self, target) -> str:
        return "int64"  # torch's index dtype; the graph reads it as is

    def write_full(self, graph, path: Path, target, max_len: int, top_k: int | None, metadata: dict) -> None:
        write_pte(graph, path, max_len)

    def write_step(self, graph, path: Path, spec, target, top_k: int | None, metadata: dict) -> None:
        raise EdgerecError("the ExecuTorch step model is not written yet: export the step model as ONNX or TFLite")

    def write_entry(self, graph, path, target, inputs, outputs, metadata, what) -> None:
        example = tuple(inputs(1, self.input_dtype(target)).values())  # torch.export fixes batch 1
        write_program(exported(graph, example), path, f"{what} ExecuTorch lowering")

    def int8_forms(self, settings) -> list[str]:
        return list(settings.executorch_forms)

    def plan_int8(self, form, src, work, calibration, settings, sequences, meta, target, log, model=None) -> Int8Plan:
        if model is None:
            raise EdgerecError("ExecuTorch int8 quantizes the PyTorch graph: the model the bundle came from is needed")
        rec = model()
        graph = scoring_graph(rec, meta.get("top_k"))
        if form == "static":
            log(f"{src.name}: PT2E calibration on {len(sequences)} sequences (XNNPACKQuantizer, min/max)")

        def make(chosen):
            path = work / f"executorch-{len(list(work.iterdir()))}.pte"
            quantize_pte(
                graph,
                path,
                form,
                settings.per_channel,
                chosen,
                sequences,
                meta["max_len"],
                calibration / f"executorch-{form}.json",
            )
            return path

        return Int8Plan(
            make,
            linear_units(graph),
            {"item lookup": "XNNPACKQuantizer annotates no embedding lookup: the table stays float"},
        )

    def quantize_step(self, src, dst, calibration, settings, sequences, log, model=None):
        raise EdgerecError("the ExecuTorch step model is not written yet")

    def top_k_items(self, path: Path, input_ids) -> np.ndarray:
        call = load_method(path)
        return np.concatenate([call(row[None].astype(np.int64))[0] for row in input_ids])

    def open_bundle_file(self, path: Path, meta: dict, threads: int):
        return ExecuTorchScorer(path, meta["max_len"], meta["num_items"], threads)


EXECUTORCH = ExecuTorchFormat()
