"""ExecuTorch in int8: PT2E quantization with XNNPACK's own quantizer (XNNPACKQuantizer), then
the same lowering as fp32. Two forms:

- `static`: int8 weights and int8 activations, ranges observed on the calibration set (XNNPACK's
  QS8 kernels);
- `dynamic`: int8 weights, activations quantized per call (XNNPACK's QD8 kernels, no
  calibration ranges).

PT2E quantizes the PyTorch graph, not a .pte file: the plan rebuilds the scoring graph from the
model the bundle was exported from. The units the accuracy loop can keep in float are the
graph's Linear modules (`XNNPACKQuantizer.set_module_name`); the item lookup stays float (the
quantizer annotates no embedding lookup), which is why the file is not a quarter of fp32's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerec.core.artifacts import write_json
from edgerec.core.console import quietly
from edgerec.core.errors import EdgerecError
from edgerec.devices.runtimes import encode
from edgerec.formats.executorch.export import example_ids, exported, write_program

FORMS = ("static", "dynamic")


def linear_units(graph) -> list[str]:
    """The names of the graph's Linear modules: what the accuracy loop may keep in float."""
    import torch

    return [name for name, m in graph.named_modules() if isinstance(m, torch.nn.Linear)]


@quietly("ExecuTorch's PT2E quantizer")
def quantize_pte(graph, dst: Path, form: str, per_channel: bool, units, sequences, max_len: int, ranges: Path):
    """`graph` with the Linear modules `units` in int8 (form `static` or `dynamic`), lowered to
    XNNPACK at `dst`. Static calibration replays `sequences` one batch-1 call each and saves the
    observed ranges to `ranges` (for inspection)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if form not in FORMS:
        raise EdgerecError(f"unknown ExecuTorch int8 form {form!r} (known: {', '.join(FORMS)})")
    inputs = example_ids(max_len)
    config = get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=form == "dynamic")
    quantizer = XNNPACKQuantizer()
    for name in units:
        quantizer.set_module_name(name, config)
    try:
        prepared = prepare_pt2e(exported(graph, inputs).module(), quantizer)
        with torch.no_grad():
            for ids in sequences if form == "static" else sequences[:1]:
                prepared(torch.from_numpy(encode([ids], max_len, "int64")))
        if form == "static":
            observed = {
                name: [float(m.min_val), float(m.max_val)]
                for name, m in prepared.named_modules()
                if hasattr(m, "min_val") and getattr(m, "min_val").numel() == 1
            }
            if not all(np.isfinite(v).all() for v in observed.values()):
                raise EdgerecError("the model produces NaN/inf on calibration data")
            write_json(ranges, observed)
        converted = convert_pt2e(prepared)
    except EdgerecError:
        raise
    except Exception as exc:
        raise EdgerecError(f"PT2E quantization failed: {str(exc).splitlines()[0][:300]}") from None
    write_program(exported(converted, inputs), dst, "ExecuTorch int8 lowering")
