"""report.json and a self-contained report.html (matplotlib PNGs inlined as base64, no scripts,
no network), viewable offline next to the bundle."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def points(runs: dict, compared: dict, references: dict, label: str) -> list[dict]:
    """One point per model: NDCG@10, size and p50 latency (what the plots show)."""
    out = []
    for name, ref in references.items():
        out.append(
            {
                "model": f"{name} (PyTorch)",
                "ndcg10": ref["metrics"]["NDCG@10"]["mean"],
                "ci95": ref["metrics"]["NDCG@10"]["ci95"],
                "mb": ref["bytes"] / 1e6,
                "p50_ms": ref["latency"]["p50_ms"],
            }
        )
    for group, results in [(label, runs), *compared.items()]:
        for runtime, r in results.items():
            out.append(
                {
                    "model": f"{group} {r['file']} ({runtime})",
                    "ndcg10": r["metrics"]["NDCG@10"]["mean"],
                    "ci95": r["metrics"]["NDCG@10"]["ci95"],
                    "mb": r["bytes"] / 1e6,
                    "p50_ms": r["latency"]["p50_ms"],
                }
            )
    return out


def figures(pts: list[dict], runs: dict, beyond: dict | None = None) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = {}
    for key, axis, title in (
        ("mb", "model size (MB, log)", "NDCG@10 against size"),
        ("p50_ms", "p50 latency at batch 1 (ms, log)", "NDCG@10 against latency"),
    ):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for p in pts:  # error bars: the 95% bootstrap interval over users
            low, high = p["ci95"]
            ax.errorbar(
                p[key],
                p["ndcg10"],
                yerr=[[p["ndcg10"] - low], [high - p["ndcg10"]]],
                fmt="o",
                capsize=3,
                alpha=0.8,
                label=p["model"],
            )  # a legend: close points' labels overlap
        ax.set_xscale("log")
        ax.margins(x=0.3)
        ax.set_xlabel(axis)
        ax.set_ylabel("test NDCG@10 (full ranking)")
        ax.set_title(title)
        ax.legend(fontsize=6, loc="lower left")
        ax.grid(alpha=0.3)
        images[title] = _png(fig)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    top = max(np.percentile(r["latency_ms"], 99.5) for r in runs.values())
    bins = np.linspace(0, top, 80)
    for runtime, r in runs.items():
        ms = np.asarray(r["latency_ms"])
        ax.hist(ms[ms <= top], bins=bins, alpha=0.6, label=f"{runtime} ({r['file']})")
    ax.set_xlabel("latency per batch-1 call (ms; top 0.5% cut)")
    ax.set_ylabel("calls")
    ax.set_title("Latency distribution")
    ax.legend(fontsize=8)
    images["Latency distribution"] = _png(fig)
    plt.close(fig)
    if beyond:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        shares = beyond["share_by_popularity_decile"]
        width = 0.8 / max(len(shares), 1)
        for i, (name, values) in enumerate(shares.items()):
            ax.bar(np.arange(10) + i * width - 0.4 + width / 2, values, width=width, label=name)
        ax.set_xticks(range(10), [f"{10 * d}-{10 * d + 10}%" for d in range(10)], rotation=45, fontsize=7)
        ax.set_xlabel("items by training popularity (most popular decile first)")
        ax.set_ylabel("share of all top-10 recommendations")
        ax.set_title("Recommendations by item popularity")
        ax.legend(fontsize=7)
        images["Recommendations by item popularity"] = _png(fig)
        plt.close(fig)
    return images


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


EMULATED_HEADERS = [
    "aarch64 runtime",
    "file",
    "users",
    "max |diff| vs here",
    "identical top-10",
    "NDCG@10 ARM / here",
    "instructions per call, emulated",
    "per step update",
    "step replay = full top-10",
]


def emulated_rows(emulated) -> list[list[str]]:
    """validate's emulated-ARM results as table rows (console and report.html)."""
    if not isinstance(emulated, dict):
        return []
    rows = []
    for cpu, runtimes in emulated["cpus"].items():
        for name, r in runtimes.items():
            count, step = r.get("instructions"), r.get("step_instructions")
            rows.append(
                [
                    f"{name} on emulated {cpu}",
                    r["file"],
                    str(r["users"]),
                    f"{r.get('max_abs_diff_vs_host', float('nan')):.2e}",
                    f"{r['identical_top10']:.3f}",
                    f"{r['ndcg10_arm']:.4f} / {r['ndcg10_host']:.4f}",
                    f"{count['instructions_per_call']:,.0f}" if isinstance(count, dict) else str(count),
                    f"{step['instructions_per_call']:,.0f}" if isinstance(step, dict) else "-",
                    (
                        f"{r['step_replay']['identical_top10_with_full']:.3f} ({r['step_replay']['users']} users)"
                        if r.get("step_replay")
                        else "-"
                    ),
                ]
            )
    return rows


RUNTIME_HEADERS = [
    "runtime",
    "file",
    "HR@10",
    "NDCG@10",
    "MRR",
    "top-10 agreement vs teacher",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "load ms",
    "peak RSS MB",
]
STEP_HEADERS = [
    "runtime",
    "file",
    "identical top-10",
    "top-10 agreement with full model",
    "NDCG@10",
    "update p50 ms",
    "p95 ms",
    "p99 ms",
    "p50 / full call",
]
BEYOND_HEADERS = ["model", "coverage", "mean popularity", "Gini", "tail share", "coverage vs teacher"]


def _runtime_rows(runs: dict) -> list[list]:
    return [
        [
            name,
            r["file"],
            f"{r['metrics']['HR@10']['mean']:.4f}",
            f"{r['metrics']['NDCG@10']['mean']:.4f}",
            f"{r['metrics']['MRR']['mean']:.4f}",
            f"{r['metrics'].get('top10_agreement', {}).get('mean', float('nan')):.3f}",
            f"{r['latency']['p50_ms']:.4f}",
            f"{r['latency']['p95_ms']:.4f}",
            f"{r['latency']['p99_ms']:.4f}",
            f"{r['load_ms']:.1f}",
            f"{r['peak_rss_mb']:.1f}",
        ]
        for name, r in runs.items()
    ]


def _beyond_rows(report: dict) -> list[list]:
    return [
        [
            name,
            f"{b['coverage']:.3f}",
            f"{b['mean_popularity']:.1f}",
            f"{b['gini']:.3f}",
            f"{b['tail_share']:.3f}",
            f"{b['vs_teacher']['coverage']:.2f}" if b.get("vs_teacher") else "-",
        ]
        for name, b in report.get("beyond_accuracy", {}).get("models", {}).items()
    ]


def _step_html(report: dict) -> str:
    rows = [
        [
            name,
            r["file"],
            f"{r['identical_top10']:.3f}",
            f"{r['top10_agreement_with_full_model']:.3f}",
            f"{r['metrics']['NDCG@10']['mean']:.4f}",
            f"{r['latency_per_update']['p50_ms']:.4f}",
            f"{r['latency_per_update']['p95_ms']:.4f}",
            f"{r['latency_per_update']['p99_ms']:.4f}",
            f"{r['p50_vs_full_call']:.2f}x",
        ]
        for name, r in (report.get("step_model") or {}).items()
    ]
    if not rows:
        return ""
    return "<h2>Step model (every history replayed item by item)</h2>" + _table(STEP_HEADERS, rows)


def _arm_html(report: dict) -> str:
    emulated = report.get("emulated_arm")
    if isinstance(emulated, dict):
        return (
            "<h2>On ARM: the aarch64 runtimes under emulation</h2><p>The same file on the aarch64 "
            "build of each runtime (qemu user mode), against this machine's run of it. Instructions "
            "are counted on the emulated CPU (no timing noise; each count is the median of two or three "
            "measurements, which usually agree within 0.2%); emulated seconds mean nothing.</p>"
            + _table(EMULATED_HEADERS, emulated_rows(emulated))
        )
    return f"<h2>On ARM</h2><p>Emulated ARM check: {html.escape(str(emulated))}.</p>" if emulated else ""


def write_report(directory: Path, report: dict, runs: dict, compared: dict, references: dict, label: str) -> None:
    pts = points(runs, compared, references, label)
    report["points"] = pts
    images = figures(pts, runs, report.get("beyond_accuracy"))
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    budget_rows = [[b["budget"], b["where"], b["value"], b["limit"], b["status"]] for b in report["budgets"]]
    accuracy_rows = [[p["model"], f"{p['ndcg10']:.4f}", f"{p['mb']:.3f}", f"{p['p50_ms']:.4f}"] for p in pts]
    verdict = "PASS" if report["passed"] else "FAIL"
    name = html.escape(report["target"]["name"])
    intro = (
        f"Bundle {html.escape(report['bundle'])} ({html.escape(label)}), {report['users']} test users, "
        "full ranking, history masked."
    )
    imgs = "".join(
        f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,{b}"><figcaption>'
        f"{html.escape(t)}</figcaption></figure>"
        for t, b in images.items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>edgerec report: {name}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}
figure{{display:inline-block;margin:0 1em 1em 0}}</style></head><body>
<h1>{name}: {verdict}</h1>
<p>{intro}
{html.escape(report["note"])}.</p>
<h2>Budgets</h2>{_table(["budget", "where", "value", "limit", "status"], budget_rows)}
<h2>On the target's runtimes</h2>{_table(RUNTIME_HEADERS, _runtime_rows(runs))}
{_step_html(report)}
{_arm_html(report)}
<h2>All models</h2>{_table(["model", "NDCG@10", "MB", "p50 ms"], accuracy_rows)}
<h2>Beyond accuracy (top-10, same users)</h2>{_table(BEYOND_HEADERS, _beyond_rows(report))}
<h2>Plots</h2>{imgs}
</body></html>
"""
    _atomic_write(directory / "report.html", page)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
