"""The error sweep's edge classes (tests/test_cli_sweep.py walks every option's bad values): inputs
that parse but make no sense, places that cannot be written, two commands on one output, and
rankings when few candidates are left. Each ends in a correct answer or in one `error:` line
with a non-zero exit, no traceback and nothing half-written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgerec.core.artifacts import read_manifest
from edgerec.core.models import Shape
from edgerec.core.training import TrainConfig
from edgerec.stages.export import ExportConfig, export
from edgerec.stages.teacher import TeacherConfig, train_teacher

CLI = [sys.executable, "-m", "edgerec"]
TINY = ["--hidden", "8", "--layers", "1", "--heads", "1", "--intermediate", "8", "--max-len", "8"]
SHIPPED = Path(__file__).resolve().parents[2] / "targets"


def run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, **kw)


def one_error_line(result: subprocess.CompletedProcess, *parts: str) -> str:
    """The run failed with exit 2 and exactly one `error:` line that holds every part."""
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr[-600:])
    assert "Traceback" not in result.stderr, result.stderr[-600:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines[-5:]
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------ values that parse


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("max_p95_ms", "-2.0", "'budgets.max_p95_ms' is -2.0; allowed: >= 1e-06"),
        ("max_model_mb", "0.0", "'budgets.max_model_mb' is 0.0"),
        ("min_ndcg_retained", "nan", "a finite number is needed"),
        ("parity_atol", "inf", "a finite number is needed"),
        ("max_ndcg_drop", "1.5", "'quantization.max_ndcg_drop' is 1.5; allowed: [0.0, 1.0]"),
        ("opset", "3", "'onnx.opset' is 3; allowed: [7, 23]"),
        ("threads", "0", "'threads' is 0; allowed: [1, 256]"),
        ("users", "-1", "'device.users' is -1"),
        ("min_version", '"latest"', "expected a version like"),
    ],
)
def test_a_profile_value_out_of_its_range_is_one_line(tmp_path, key, value, expected):
    text = (SHIPPED / "arm64.toml").read_text()
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split("=")[0].strip() == key)
    lines[at] = f"{key} = {value}"
    (tmp_path / "arm64.toml").write_text("\n".join(lines) + "\n")
    one_error_line(run(["targets", "show", "arm64", "--targets-dir", str(tmp_path)]), expected)


def test_every_shipped_profile_is_in_range():
    for path in SHIPPED.glob("*.toml"):
        result = run(["targets", "show", path.stem])
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("stamp", ["inf", "-inf", "1e309"])
def test_a_non_finite_timestamp_is_one_line(tmp_path, stamp):
    csv = tmp_path / "rows.csv"
    csv.write_text("user,item,timestamp\n" + "".join(f"u,i{j},{j}\n" for j in range(4)) + f"u,i9,{stamp}\n")
    one_error_line(run(["data", str(csv), "--out", str(tmp_path / "data")]), "at data row 5 is not a finite number")
    assert not (tmp_path / "data").exists()


def test_a_jsonl_file_with_a_byte_order_mark_is_read(tmp_path, interactions_csv):
    import pandas as pd

    rows = pd.read_csv(interactions_csv).to_json(orient="records", lines=True)
    plain, marked = tmp_path / "plain.jsonl", tmp_path / "marked.jsonl"
    plain.write_text(rows)
    marked.write_bytes(b"\xef\xbb\xbf" + rows.encode())
    for path in (plain, marked):
        assert run(["data", str(path), "--out", str(tmp_path / path.stem)]).returncode == 0
    counts = [read_manifest(tmp_path / name)["counts"] for name in ("plain", "marked")]
    assert counts[0] == counts[1]


def test_a_broken_jsonl_line_is_named(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"user": "a", "item": "x", "timestamp": 1}\n{"user": oops}\n')
    one_error_line(run(["data", str(path), "--out", str(tmp_path / "d")]), "line 2 is not valid JSON")


# ------------------------------------------------------------------ places that cannot be written


def _can_mount_read_only() -> bool:
    return (
        os.geteuid() == 0
        and shutil.which("unshare") is not None
        and subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0
    )


def run_read_only(folder: Path, args, **kw) -> subprocess.CompletedProcess:
    """The CLI with `folder` read-only: a read-only bind mount in a private mount namespace
    (root ignores permission bits), or mode 0555 for an ordinary user."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            return run(args, **kw)
        finally:
            folder.chmod(0o755)
    if not _can_mount_read_only():
        pytest.skip(
            "needs `unshare -m` (root in a container that allows mount namespaces) to make a folder read-only for root"
        )
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, str(folder), *CLI, *args], capture_output=True, text=True, **kw
    )


def test_a_read_only_output_folder_is_one_line(tmp_path, interactions_csv):
    place = tmp_path / "ro"
    place.mkdir()
    result = run_read_only(place, ["data", str(interactions_csv), "--out", str(place / "data")])
    one_error_line(result, f"{place}: cannot write there (Read-only file system")
    assert list(place.iterdir()) == []


def test_distill_into_a_read_only_folder_fails_before_training(tmp_path, data_dir, tiny_teacher):
    place = tmp_path / "ro"
    place.mkdir()
    result = run_read_only(
        place,
        [
            "distill",
            "--teacher",
            str(tiny_teacher),
            "--data",
            str(data_dir),
            "--out",
            str(place / "student"),
            *TINY,
            "--epochs",
            "1",
        ],
    )
    one_error_line(result, "cannot write there")
    assert "epoch" not in result.stderr + result.stdout  # no training ran


def test_a_cache_that_is_a_file_or_read_only_is_one_line(tmp_path):
    cache = tmp_path / "cache-file"
    cache.write_text("not a folder")
    env = {**os.environ, "EDGEREC_CACHE": str(cache)}
    one_error_line(
        run(["data", "--dataset", "movielens-100k", "--out", str(tmp_path / "d")], env=env),
        "is a file, not a folder (EDGEREC_CACHE",
    )
    below = {**os.environ, "EDGEREC_CACHE": str(cache / "sub")}
    one_error_line(
        run(["data", "--dataset", "movielens-100k", "--out", str(tmp_path / "d")], env=below), "is a file, not a folder"
    )
    folder = tmp_path / "ro-cache"
    folder.mkdir()
    env = {**os.environ, "EDGEREC_CACHE": str(folder)}
    one_error_line(
        run_read_only(folder, ["data", "--dataset", "movielens-100k", "--out", str(tmp_path / "d")], env=env),
        f"{folder}: cannot write there",
    )
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------ two commands, one output


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("edges") / "teacher"
    train_teacher(
        data_dir,
        out,
        TeacherConfig(
            kind="causal",
            shape=Shape(hidden=8, layers=1, heads=1, intermediate=8, max_len=8),
            train=TrainConfig(epochs=1, batch_size=16),
        ),
    )
    return out


def _wait_for(path: Path, process: subprocess.Popen, guard_s: float = 180.0) -> None:
    """Until `path` exists (a guard against a hang, not a timing claim)."""
    deadline = time.monotonic() + guard_s
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_second_run_is_refused_at_once_with_the_holders_pid_and_a_stale_lock_is_taken_over(tmp_path, data_dir):
    out = tmp_path / "teacher"
    args = ["teacher", "--data", str(data_dir), "--out", str(out), *TINY, "--patience", "100000"]
    first = subprocess.Popen(
        [*CLI, *args, "--epochs", "100000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(tmp_path / ".teacher.work", first)  # training has started
        second = run([*args, "--epochs", "100000"])
        assert first.poll() is None  # the first is still training: the refusal did not wait for it
        one_error_line(second, f"{out}: another edgerec command (pid {first.pid}) is writing it now")
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock: the file stays, the flock goes
        first.communicate()
    assert (tmp_path / ".teacher.lock").exists()
    third = run([*args, "--epochs", "1"])
    assert third.returncode == 0, third.stderr[-600:]
    read_manifest(out, "teacher")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher"]  # no lock, work folder or temp left


def test_the_library_holds_the_lock_for_the_whole_stage(tmp_path, data_dir, tiny_teacher, lock_holder):
    """A holder in another process (as a concurrent command) refuses a stage before it reads its
    inputs; the same process may nest its own claims (a stage inside build)."""
    from edgerec.core.errors import EdgerecError

    out = tmp_path / "bundle"
    with lock_holder(out) as pid:
        with pytest.raises(EdgerecError, match=rf"another edgerec command \(pid {pid}\)"):
            export(tiny_teacher, data_dir, out, ExportConfig(target="x86_64-avx2", parity_users=4))
    export(tiny_teacher, data_dir, out, ExportConfig(target="x86_64-avx2", parity_users=4))
    assert not (tmp_path / ".bundle.lock").exists()


# ------------------------------------------------------------------ rankings with few candidates


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, data_dir, tiny_teacher):
    out = tmp_path_factory.mktemp("edges-bundle") / "bundle"
    export(tiny_teacher, data_dir, out, ExportConfig(target="x86_64-avx2", parity_users=4))
    return out


def test_recommend_more_than_is_left_returns_only_real_unseen_items_best_first(bundle):
    items = json.loads((bundle / "items.json").read_text())
    history = [entry["id"] for entry in items[:-3]]  # all but three items
    result = run(["recommend", "-b", str(bundle), "--history", ",".join(history), "-k", "50", "--explain", "--json"])
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "nan" not in result.stdout
    answer = json.loads(result.stdout)
    assert (answer["k"], answer["returned"], answer["candidates"]) == (50, 3, 3)
    got = answer["items"]
    assert {row["item"] for row in got} == {entry["id"] for entry in items[-3:]}
    scores = [row["score"] for row in got]
    assert scores == sorted(scores, reverse=True)
    assert all(math.isfinite(b["contribution"]) for row in got for b in row["because"])
    plain = run(["recommend", "-b", str(bundle), "--history", ",".join(history), "-k", "50"])
    assert plain.returncode == 0 and "note: 3 of the 50 items asked for" in plain.stderr
    everything = run(["recommend", "-b", str(bundle), "--history", ",".join(e["id"] for e in items), "--json"])
    assert json.loads(everything.stdout)["items"] == []


def test_recommend_with_an_allow_list_is_the_full_ranking_with_the_rest_removed(tmp_path, bundle):
    from edgerec.stages.recommend import Recommender

    items = [entry["id"] for entry in json.loads((bundle / "items.json").read_text())]
    history = items[:2]
    full = Recommender(bundle).recommend(history, k=len(items))
    allowed = items[1::3]  # an item of the history among them, which stays out
    (tmp_path / "allow.txt").write_text("\n".join(allowed) + "\n")
    result = run(
        ["recommend", "-b", str(bundle), "--history", ",".join(history), "-k", "4"]
        + ["--allow", f"@{tmp_path / 'allow.txt'}", "--exclude", allowed[3], "--json"]
    )
    assert result.returncode == 0, result.stderr
    expected = [row["item"] for row in full if row["item"] in set(allowed) - {allowed[3]}][:4]
    assert [row["item"] for row in json.loads(result.stdout)["items"]] == expected
    boosted = Recommender(bundle).recommend(history, k=1, boost={full[-1]["item"]: 1e6})
    assert boosted[0]["item"] == full[-1]["item"]  # the worst item, boosted to the top
    plain = Recommender(bundle).recommend(history, k=len(items), explain=True)
    explained = Recommender(bundle).recommend(history, k=len(items), explain=True, boost={full[-1]["item"]: 2.0})
    before, after = (next(r for r in rows if r["item"] == full[-1]["item"]) for rows in (plain, explained))
    assert after["score"] == pytest.approx(before["score"] + 2.0, abs=1e-5)
    # the boost is not a history item's contribution: the score drops are the model's
    assert [b["contribution"] for b in after["because"]] == pytest.approx(
        [b["contribution"] for b in before["because"]], abs=1e-5
    )
    none = run(["recommend", "-b", str(bundle), "--history", history[0], "--allow", history[0], "--json"])
    answer = json.loads(none.stdout)
    assert none.returncode == 0 and (answer["returned"], answer["candidates"]) == (0, 0)


def test_validate_and_evaluate_into_a_read_only_folder_fail_before_the_work(tmp_path, data_dir, bundle, tiny_teacher):
    place = tmp_path / "ro"
    place.mkdir()
    result = run_read_only(
        place,
        [
            "validate",
            "--bundle",
            str(bundle),
            "--data",
            str(data_dir),
            "--target",
            "x86_64-avx2",
            "--report",
            str(place / "report"),
        ],
    )
    one_error_line(result, f"{place}: cannot write the validation report there (Read-only file system)")
    result = run_read_only(
        place, ["evaluate", str(tiny_teacher), "--data", str(data_dir), "--out", str(place / "eval.json")]
    )
    one_error_line(result, "cannot write the evaluation report there")
    assert list(place.iterdir()) == []
