"""`edgerec validate --target T`: accuracy, latency, size and memory on the target's runtimes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgerec.cli.common import JsonOut, PublicKey, emit_json, forward, plain_table, user_errors
from edgerec.cli.targets import TargetsDir


def print_beyond_and_budgets(report: dict) -> None:
    """The beyond-accuracy table and the budget table of a validation report (validate, build)."""
    typer.echo("")
    plain_table(
        ["model (top-10, test users)", "coverage", "mean popularity", "Gini", "tail share"],
        [
            [name, f"{b['coverage']:.3f}", f"{b['mean_popularity']:.1f}", f"{b['gini']:.3f}", f"{b['tail_share']:.3f}"]
            for name, b in report["beyond_accuracy"]["models"].items()
        ],
    )
    typer.echo("")
    plain_table(
        ["budget", "where", "value", "limit", "status"],
        [[b["budget"], b["where"], str(b["value"]), b["limit"], b["status"]] for b in report["budgets"]],
    )


def print_step_model(step: dict | None) -> None:
    """The step model's replay: identical top-10 with the full model, per-update latency."""
    if not step:
        return
    typer.echo("")
    plain_table(
        [
            "step model (replayed)",
            "file",
            "identical top-10",
            "top-10 agreement",
            "NDCG@10",
            "update p50 ms",
            "p95 ms",
            "p99 ms",
            "p50 / full call",
        ],
        [
            [
                name,
                r["file"],
                f"{r['identical_top10']:.3f}",
                f"{r['top10_agreement_with_full_model']:.3f}",
                f"{r['metrics']['NDCG@10']['mean']:.4f}",
                f"{r['latency_per_update']['p50_ms']:.3f}",
                f"{r['latency_per_update']['p95_ms']:.3f}",
                f"{r['latency_per_update']['p99_ms']:.3f}",
                f"{r['p50_vs_full_call']:.2f}x",
            ]
            for name, r in step.items()
        ],
    )


def print_emulated(emulated) -> None:
    """The bundle on the aarch64 runtimes under emulation: agreement with this machine, ARM
    instructions per call (the only cost figure emulation gives: its seconds mean nothing)."""
    from edgerec.core.report import EMULATED_HEADERS, emulated_rows

    if isinstance(emulated, dict):
        typer.echo("")
        plain_table(EMULATED_HEADERS, emulated_rows(emulated))
    elif emulated and not str(emulated).startswith("the profile names no"):
        typer.echo(f"\nemulated ARM check: {emulated}")


def _runtime_row(name: str, file: str, r: dict, load: str = "-", rss: str = "-") -> list[str]:
    m, lat = r["metrics"], r["latency"]
    return [
        name,
        file,
        f"{m['NDCG@10']['mean']:.4f}",
        f"{m['HR@10']['mean']:.4f}",
        f"{lat['p50_ms']:.3f}",
        f"{lat['p95_ms']:.3f}",
        f"{lat['p99_ms']:.3f}",
        load,
        rss,
        f"{r['bytes'] / 1e6:.3f}",
    ]


def print_validation(result: dict, report_html: Path) -> None:
    """validate's readable result: each runtime beside the PyTorch references, then the step
    model, the emulated ARM device, beyond-accuracy and the budgets."""
    rows = [
        _runtime_row(name, r["file"], r, f"{r['load_ms']:.1f}", f"{r['peak_rss_mb']:.0f}")
        for name, r in result["runtimes"].items()
    ]
    rows += [_runtime_row(f"{name} (PyTorch)", "-", ref) for name, ref in result["references"].items()]
    onnx_teacher = result.get("teacher_onnxruntime")
    if onnx_teacher:  # a text teacher, also in ONNX Runtime: the before model runtime to runtime
        rows.append(_runtime_row("teacher (onnxruntime)", onnx_teacher["file"], onnx_teacher))
    typer.echo(result["note"])
    plain_table(
        ["runtime", "file", "NDCG@10", "HR@10", "p50 ms", "p95 ms", "p99 ms", "load ms", "peak RSS MB", "MB"], rows
    )
    print_step_model(result.get("step_model"))
    print_emulated(result.get("emulated_arm"))
    print_beyond_and_budgets(result)
    typer.echo(f"\n{'PASS' if result['passed'] else 'FAIL'}  report -> {report_html}")


def validate(
    target: Annotated[str, typer.Option("--target", "-T", help="Target profile (edgerec targets list).")],
    bundle: Annotated[
        Optional[Path], typer.Option("--bundle", "-b", help="Bundle to validate (default dist/<target>).")
    ] = None,
    data: Annotated[Path, typer.Option("--data", "-d", help="Data artifact (test users).")] = Path("runs/data"),
    teacher: Annotated[
        Optional[Path], typer.Option(help="Teacher artifact (default: found through the bundle's manifests).")
    ] = None,
    student: Annotated[
        Optional[Path], typer.Option(help="fp32 student artifact (default: found through the bundle's manifests).")
    ] = None,
    warmup: Annotated[int, typer.Option(min=0, max=1_000_000, help="Untimed batch-1 calls before timing.")] = 50,
    users: Annotated[Optional[int], typer.Option(min=1, max=10**9, help="Test users to run (default: all).")] = None,
    device: Annotated[
        Optional[str],
        typer.Option(
            help="Run on a remote device, ssh://user@host[:port]; it needs Python, NumPy and the runtime, not edgerec."
        ),
    ] = None,
    device_python: Annotated[str, typer.Option(help="Python on the device.")] = "python3",
    ssh_key: Annotated[
        Optional[Path], typer.Option(help="Private key for the device (default: your ssh setup).")
    ] = None,
    report: Annotated[
        Optional[Path], typer.Option(help="Folder for report.json and report.html (default: the bundle).")
    ] = None,
    targets_dir: TargetsDir = None,
    allow_modified: Annotated[
        bool,
        typer.Option(
            help="Validate bundle files that differ from the hashes metadata.json records (edited on "
            "purpose); the report lists them under modified_files."
        ),
    ] = False,
    emulate: Annotated[
        bool,
        typer.Option(
            help="Run the bundle on the aarch64 builds of its runtimes for the CPU models the profile's "
            "[device] emulate names (qemu user mode; set up once into the cache)."
        ),
    ] = True,
    public_key: PublicKey = None,
    json_out: JsonOut = False,
) -> None:
    """Run the bundle on every runtime the target names, in a separate process, as an app would.

    Reports HR/NDCG/MRR next to the teacher and the fp32 student, p50-p99 latency at batch 1,
    load time, peak memory and file size, and checks the profile's budgets. Exit code 0 when every
    budget passes, 1 when one fails, 2 for bad input."""
    options = dict(locals())
    with user_errors():
        from edgerec.api import validate as run

        result = forward(run, options)
    if json_out:
        emit_json(result)
    else:
        print_validation(result, (report or Path(result["bundle"])) / "report.html")
    raise typer.Exit(0 if result["passed"] else 1)
