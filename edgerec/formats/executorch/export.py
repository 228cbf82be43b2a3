"""`.pte` files from the student's graphs: torch.export, then ExecuTorch's edge dialect lowered to
the XNNPACK backend (what ExecuTorch's Android and iOS builds ship for CPUs), then the program.

Nothing here is written by hand that ExecuTorch does: `to_edge_transform_and_lower` with the
`XnnpackPartitioner` delegates every subgraph XNNPACK runs, and the rest (the in-graph top-K's
scatter and TopK, integer index work) stays on ExecuTorch's portable kernels.
"""

from __future__ import annotations

from pathlib import Path

from edgerec.core.console import quietly
from edgerec.core.errors import EdgerecError


def example_ids(max_len: int):
    import torch

    # batch 1, int64: one call per user, as an app makes it (torch.export fixes the shape)
    return (torch.ones((1, max_len), dtype=torch.long),)


def exported(graph, inputs: tuple):
    """torch.export of `graph` on `inputs`; one line for the user when it fails."""
    import torch

    try:
        return torch.export.export(graph, inputs)
    except Exception as exc:  # torch.export raises many types
        raise EdgerecError(f"torch.export failed: {str(exc).splitlines()[0][:300]}") from None


@quietly("ExecuTorch's exporter")
def write_program(program, path: Path, what: str = "ExecuTorch lowering") -> None:
    """An exported program (float or PT2E-quantized) as a .pte with the XNNPACK backend."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        Path(path).write_bytes(lowered.to_executorch().buffer)
    except Exception as exc:
        raise EdgerecError(f"{what} failed: {str(exc).splitlines()[0][:300]}") from None


def write_pte(graph, path: Path, max_len: int) -> None:
    write_program(exported(graph, example_ids(max_len)), path)
