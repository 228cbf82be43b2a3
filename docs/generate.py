"""Write the documentation's generated reference pages from the code's own files, never by hand:

- docs/reference/cli.md from the Typer app (`typer edgerec.cli.main utils docs`: Typer's own
  generator, so the page says what `--help` says);
- docs/reference/targets.md from targets/*.toml (each profile whole, with its comments, after a
  summary table);
- docs/reference/benchmarks/<name>.md from benchmarks/results/<name>.json (every figure on those
  pages is a value of that file), with the script that wrote it and how to run it again;
- the benchmark pages' entries in mkdocs.yml's navigation (between the two marker lines);
- the README's table of what the main job ends with, from benchmarks/results/build.json.

    python docs/generate.py           # write them
    python docs/generate.py --check   # exit 1 when a committed page differs from what it would write

tests/docs/test_docs.py runs the check, so the committed pages are always what the committed
results and profiles give, byte for byte.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NAV_START = "          # generated benchmark pages: start (python docs/generate.py)"
NAV_END = "          # generated benchmark pages: end"
README_START = "<!-- generated from benchmarks/results/build.json by docs/generate.py: start -->"
README_END = "<!-- generated: end -->"
MACHINE_KEYS = ("cpu", "cores", "torch_threads", "python", "torch", "platform")


def number(value) -> str:
    """One spelling per value, so a page changes only when its results file does."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.3f}"
        return f"{value:.4g}"
    return str(value)


def scalar_or_list(value) -> bool:
    return not isinstance(value, (dict, list)) or all(not isinstance(v, (dict, list)) for v in value)


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list)) for v in value):
            return "[" + ", ".join(number(v) for v in value) + "]"
        return f"`{json.dumps(value, separators=(',', ':'))}`"
    if isinstance(value, dict):
        if all(scalar_or_list(v) for v in value.values()):
            return "; ".join(f"{k} {cell(v)}" for k, v in value.items())
        return f"`{json.dumps(value, separators=(',', ':'))}`"
    text = number(value).replace("|", "\\|").replace("\n", " ")
    return text


def table(headers: list[str], rows: list[list[str]]) -> str:
    head = "| " + " | ".join(h.replace("|", "\\|") for h in headers) + " |"
    rule = "|" + "|".join("---" for _ in headers) + "|"
    return "\n".join([head, rule] + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def flat(record: dict) -> dict:
    """A record's scalar fields, with one level of nested scalars as `outer.inner`."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict) and value and all(not isinstance(v, (dict, list)) for v in value.values()):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def records_table(rows: dict[str, dict] | list[dict], key_header: str | None) -> str:
    named = list(rows.items()) if isinstance(rows, dict) else [(None, r) for r in rows]
    flats = [(name, flat(r)) for name, r in named]
    columns = list(dict.fromkeys(k for _, r in flats for k in r))
    headers = ([key_header] if key_header else []) + columns
    body = [([cell(name)] if key_header else []) + [cell(r[c]) if c in r else "" for c in columns] for name, r in flats]
    return table(headers, body)


def is_records(value) -> bool:
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, dict) for v in value)
    return isinstance(value, dict) and bool(value) and all(isinstance(v, dict) for v in value.values())


def section(name: str, value, depth: int) -> str:
    heading = "#" * min(depth, 6) + f" {name}\n\n"
    if is_records(value):
        return heading + records_table(value, "name" if isinstance(value, dict) else None) + "\n"
    if isinstance(value, dict):
        scalars = {k: v for k, v in value.items() if not (is_records(v) or isinstance(v, dict) and v)}
        out = heading + (
            table(["field", "value"], [[cell(k), cell(v)] for k, v in scalars.items()]) + "\n" if scalars else ""
        )
        for key, inner in value.items():
            if key not in scalars:
                out += section(key, inner, depth + 1)
        return out
    return heading + cell(value) + "\n\n"


def script_for(name: str) -> Path | None:
    for candidate in (name, name.split("-")[0]):
        path = ROOT / "benchmarks" / f"{candidate}.py"
        if path.is_file():
            return path
    return None


def benchmark_page(path: Path) -> str:
    result = json.loads(path.read_text())
    script = script_for(path.stem)
    doc = ast.get_docstring(ast.parse(script.read_text())) if script else None
    lines = [f"# Benchmark: {path.stem}\n"]
    if doc:
        lines.append(doc.split("\n\n")[0].replace("\n", " ").strip() + "\n")
    source = f"`benchmarks/results/{path.name}`"
    lines.append(
        f"Every figure below is a value of {source}"
        + (f", written by `benchmarks/{script.name}` (`python benchmarks/{script.name} --help`)." if script else ".")
        + " This page is generated from that file (`python docs/generate.py`); do not edit it.\n"
    )
    machine = result.get("machine")
    if isinstance(machine, dict):
        where = ", ".join(f"{k} {machine[k]}" for k in MACHINE_KEYS if k in machine)
        lines.append(f"Measured on: {where}.\n")
        if machine.get("cpu_flags"):
            lines.append(f"CPU flags: {', '.join(machine['cpu_flags'])}.\n")
    body = {k: v for k, v in result.items() if k != "machine"}
    scalars = {k: v for k, v in body.items() if not (is_records(v) or isinstance(v, dict) and v)}
    if scalars:
        lines.append(table(["field", "value"], [[cell(k), cell(v)] for k, v in scalars.items()]))
    for key, value in body.items():
        if key not in scalars:
            lines.append(section(key, value, 2).rstrip("\n") + "\n")
    return "\n".join(lines).rstrip("\n") + "\n"


def benchmarks_index(paths: list[Path]) -> str:
    rows = []
    for path in paths:
        script = script_for(path.stem)
        doc = ast.get_docstring(ast.parse(script.read_text())) if script else ""
        first = (doc or "").split("\n\n")[0].replace("\n", " ").strip()
        rows.append([f"[{path.stem}]({path.stem}.md)", f"`benchmarks/{script.name}`" if script else "", cell(first)])
    return (
        "# Benchmarks\n\n"
        "Every performance and accuracy figure edgerec quotes comes from a script in `benchmarks/` that prints a "
        "table and writes `benchmarks/results/<name>.json`. One page per results file, generated from it "
        "(`python docs/generate.py`). Latencies are those of the machine named on each page, never a phone's; "
        "ARM figures are instructions per call on an emulated CPU (deterministic), not seconds.\n\n"
        + table(["results", "script", "what it measures"], rows)
    )


def targets_page() -> str:
    paths = sorted((ROOT / "targets").glob("*.toml"))
    rows = []
    for path in paths:
        profile = tomllib.loads(path.read_text())
        budgets = profile.get("budgets", {})
        rows.append(
            [
                f"[{profile.get('name', path.stem)}](#{path.stem.lower()})",
                cell(profile.get("formats", [])),
                cell(profile.get("offers", [])),
                cell([r.get("name") for r in profile.get("runtimes", [])]),
                cell(profile.get("device", {}).get("emulate", [])),
                cell({k: v for k, v in budgets.items() if not isinstance(v, (dict, list))}),
            ]
        )
    out = [
        "# Target profiles\n",
        "The profiles in `targets/`, generated from the files themselves (`python docs/generate.py`): a summary, "
        "then each file whole, with the comments that say where each setting comes from. "
        "`edgerec targets show NAME` prints one as edgerec reads it.\n",
        table(["profile", "formats", "offers", "runtimes", "emulated CPUs", "budgets"], rows),
    ]
    for path in paths:
        out.append(f"## {path.stem}\n\n`targets/{path.name}`\n\n```toml\n{path.read_text().rstrip()}\n```\n")
    return "\n".join(out)


def cli_page() -> str:
    import subprocess

    made = subprocess.run(
        [sys.executable, "-m", "typer", "edgerec.cli.main", "utils", "docs", "--name", "edgerec"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "100", "TERM": "dumb"},
    ).stdout
    # one level down, under the page's own title
    shifted = "\n".join("#" + line if line.startswith("#") else line for line in made.strip().splitlines())
    return (
        "# Command line\n\n"
        "Generated from the Typer app itself (Typer's `utils docs`, run by `python docs/generate.py`), so it is "
        "what `--help` says. Every command that prints a result also takes `--json`; exit codes are 0 on "
        "success, 1 when a budget fails (validate, build) and 2 for bad input, with one line naming the "
        "problem.\n\n" + shifted + "\n"
    )


def nav(paths: list[Path], config: str) -> str:
    start, end = config.index(NAV_START), config.index(NAV_END)
    entries = "".join(f"          - {p.stem}: reference/benchmarks/{p.stem}.md\n" for p in paths)
    return config[: start + len(NAV_START)] + "\n" + entries + config[end:]


def readme(text: str) -> str:
    """The README's measured table: the final table of `edgerec build --target arm64` as
    benchmarks/build.py recorded it, with the machine and what the build took."""
    path = RESULTS / "build.json"
    if not path.is_file():
        body = "Not measured yet: `python benchmarks/build.py` records it in `benchmarks/results/build.json`.\n"
    else:
        build = json.loads(path.read_text())
        machine = build["machine"]
        cpu = f"{machine['cpu']}, {machine['cores']} cores"
        points = table(
            ["model", "MB", f"p50 ms (batch 1, {machine['cpu']})", "test NDCG@10"],
            [[p["model"], f"{p['mb']:.3f}", f"{p['p50_ms']:.3f}", f"{p['ndcg10']:.4f}"] for p in build["points"]],
        )
        budgets = table(
            ["budget", "where", "value", "limit", "status"],
            [
                [cell(b["budget"]), cell(b["where"]), cell(b["value"]), cell(b["limit"]), b["status"]]
                for b in build["budgets"]
            ],
        )
        body = (
            f"`{build['command']}` on {cpu}: {build['minutes']} min, peak resident memory "
            f"{build['peak_tree_rss_gb']} GB, {'PASS' if build['passed'] else 'FAIL'}. Latencies are this machine's, "
            "not a phone's; the phone's CPU is counted in ARM instructions on the emulated Cortex-A76. From "
            "[`benchmarks/results/build.json`](docs/reference/benchmarks/build.md) (`python benchmarks/build.py`).\n\n"
            + points
            + "\n"
            + budgets
        )
    start, end = text.index(README_START), text.index(README_END)
    return text[: start + len(README_START)] + "\n" + body + text[end:]


def pages() -> dict[Path, str]:
    results = sorted(RESULTS.glob("*.json"))
    out = {
        ROOT / "docs" / "reference" / "targets.md": targets_page(),
        ROOT / "docs" / "reference" / "cli.md": cli_page(),
    }
    out[ROOT / "docs" / "reference" / "benchmarks" / "index.md"] = benchmarks_index(results)
    for path in results:
        out[ROOT / "docs" / "reference" / "benchmarks" / f"{path.stem}.md"] = benchmark_page(path)
    mkdocs = ROOT / "mkdocs.yml"
    out[mkdocs] = nav(results, mkdocs.read_text())
    out[ROOT / "README.md"] = readme((ROOT / "README.md").read_text())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed pages instead of writing")
    args = parser.parse_args()
    stale = []
    wanted = pages()
    folder = ROOT / "docs" / "reference" / "benchmarks"
    extra = [p for p in folder.glob("*.md") if p not in wanted] if folder.is_dir() else []
    for path, text in wanted.items():
        if not path.is_file() or path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    for path in extra:
        stale.append(path)
        if not args.check:
            path.unlink()
    if args.check and stale:
        print("stale generated pages (run python docs/generate.py):", *[str(p.relative_to(ROOT)) for p in stale])
        return 1
    print(f"{len(wanted)} pages {'checked' if args.check else 'written'}, {len(stale)} changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
