"""A text teacher fine-tuned elsewhere: a plain Hugging Face directory (config whose id2label
names the items, tokenizer files, model.safetensors; no edgerec files) imported with `edgerec
teacher import` and distilled with `edgerec distill`, no edgerec training. Same 943 test users.

    python benchmarks/text_import.py [--source runs/bench-text] [--renamed 12]

The checkpoint is the text teacher `benchmarks/text_teacher.py` fine-tuned (its HF files only),
with `--renamed` of its labels renamed to items the data does not have, as after a catalogue
change: the import must count both kinds of mismatch in one line each, rank the data items the
teacher lost last, and distil anyway. Runs the CLI as a user would; writes
benchmarks/results/text_import.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt_ci, machine, print_table, run_benchmark, save  # noqa: E402

HF_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("runs/bench-text"))
    parser.add_argument("--renamed", type=int, default=12)
    parser.add_argument("--name", default="text_import")
    args = parser.parse_args()

    from edgerec.core.evaluation import evaluate
    from edgerec.core.interactions import load_data
    from edgerec.core.metrics import paired_bootstrap
    from edgerec.core.models import load_model

    work = args.source / "import"
    shutil.rmtree(work, ignore_errors=True)
    ckpt = work / "checkpoint"
    ckpt.mkdir(parents=True)
    for name in HF_FILES:
        shutil.copy(args.source / "text-teacher" / "model" / name, ckpt / name)
    config = json.loads((ckpt / "config.json").read_text())
    trained = json.loads((args.source / "text-teacher" / "model" / "edgerec.json").read_text())
    # the least popular labels (data indices are most popular first) renamed: a catalogue change
    last = sorted(config["id2label"], key=int)[-args.renamed :]
    for j in last:
        config["id2label"][j] = f"retired-{config['id2label'][j]}"
    config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    (ckpt / "config.json").write_text(json.dumps(config, indent=1))

    data_dir = args.source / "data"
    edgerec = [sys.executable, "-m", "edgerec.cli"]
    t0 = time.perf_counter()
    imported = subprocess.run(
        edgerec
        + [
            "teacher",
            "import",
            str(ckpt),
            "--data",
            str(data_dir),
            "--out",
            str(work / "teacher"),
            "--text-max-tokens",
            str(trained["max_len"]),
            "--text-items",
            str(trained["render"]["limit"]),
            "--text-order",
            trained["render"]["order"],
        ],
        capture_output=True,
        text=True,
    )
    print(imported.stdout + imported.stderr)
    if imported.returncode:
        raise SystemExit(f"import failed (exit {imported.returncode})")
    import_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    distilled = subprocess.run(
        edgerec
        + [
            "distill",
            "--teacher",
            str(work / "teacher"),
            "--data",
            str(data_dir),
            "--out",
            str(work / "student"),
            "--precision",
            "auto",
            "--epochs",
            "60",
        ],
        capture_output=True,
        text=True,
    )
    print(distilled.stdout[-1500:] + distilled.stderr[-500:])
    if distilled.returncode:
        raise SystemExit(f"distill failed (exit {distilled.returncode})")
    distill_seconds = time.perf_counter() - t0

    data = load_data(data_dir)
    evals = {
        name: evaluate(load_model(path / "model"), data, "test")
        for name, path in {
            "text teacher (edgerec fine-tuned)": args.source / "text-teacher",
            "text teacher (imported, labels renamed)": work / "teacher",
            "student from the imported teacher": work / "student",
            "student from the fine-tuned teacher": args.source / "student",
        }.items()
    }
    per_user = {k: v["per_user"]["NDCG@10"] for k, v in evals.items()}
    manifest = json.loads((work / "teacher" / "manifest.json").read_text())
    paired = {
        "imported - fine-tuned teacher": paired_bootstrap(
            per_user["text teacher (imported, labels renamed)"], per_user["text teacher (edgerec fine-tuned)"]
        ),
        "student from imported - from fine-tuned": paired_bootstrap(
            per_user["student from the imported teacher"], per_user["student from the fine-tuned teacher"]
        ),
    }
    payload = {
        "dataset": "movielens-100k",
        "users": len(data.users),
        "machine": machine(),
        "renamed_labels": args.renamed,
        "vocabulary": manifest["vocabulary"],
        "import_console": imported.stdout.strip().splitlines()[: len(manifest["vocabulary"]["notes"])],
        "models": {k: v["metrics"] for k, v in evals.items()},
        "paired_ndcg10": paired,
        "seconds": {"import (incl. test evaluation)": round(import_seconds, 1), "distill": round(distill_seconds, 1)},
    }
    print_table(
        ["model", "NDCG@10 [95% CI]", "HR@10 [95% CI]"],
        [[k, fmt_ci(v["metrics"]["NDCG@10"]), fmt_ci(v["metrics"]["HR@10"])] for k, v in evals.items()],
    )
    print()
    print_table(
        ["paired NDCG@10", "diff [95% CI]"],
        [[k, f"{v['diff']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]"] for k, v in paired.items()],
    )
    print(f"\nwrote {save(args.name, payload)}")


if __name__ == "__main__":
    run_benchmark(main)
