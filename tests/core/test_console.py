"""The console shows edgerec's lines: other libraries' output is captured, shown with --verbose,
and shown when the call that printed it fails."""

import os
import re
import subprocess
import sys

import pytest

from edgerec.core.console import third_party

# What the converters, quantizers and runtimes print when left alone (seen on these machines).
THIRD_PARTY = re.compile(
    r"TracerWarning|WARNING:root|Please consider|^I0000|^W\d{4} |absl::|XNNPACK delegate|"
    r"\[START\]|\[ DONE\]|Estimated count of arithmetic ops|torchao|oneDNN|"
    r"Converting models with optimization style",
    re.M,
)


def test_captured_output_stays_off_the_console_and_shows_when_the_call_fails(capfd):
    with third_party("a chatty library"):
        os.write(2, b"I0000 from C++\n")
        print("python noise", file=sys.stderr)
    assert capfd.readouterr().err == ""
    with pytest.raises(RuntimeError):
        with third_party("a failing library"):
            os.write(1, b"the line that explains it\n")
            raise RuntimeError("boom")
    err = capfd.readouterr().err
    assert "--- output of a failing library (last 1 of 1 lines) ---" in err and "the line that explains it" in err

    class Handled(RuntimeError):
        expected = True  # the caller handles it: no dump

    with pytest.raises(Handled):
        with third_party("a library whose failure is handled"):
            os.write(1, b"noise\n")
            raise Handled("known")
    assert capfd.readouterr().err == ""


def test_verbose_shows_it(capfd, monkeypatch):
    monkeypatch.setenv("EDGEREC_VERBOSE", "1")
    with third_party("a chatty library"):
        os.write(2, b"shown\n")
    assert "shown" in capfd.readouterr().err


@pytest.mark.slow
def test_a_build_prints_only_edgerecs_lines(tmp_path, interactions_csv):
    cli = [sys.executable, "-m", "edgerec.cli"]
    args = ["build", "--target", "arm64", str(interactions_csv), "--teacher-epochs", "2", "--distill-epochs", "2"]
    quiet = subprocess.run([*cli, *args], cwd=tmp_path, capture_output=True, text=True)
    assert quiet.returncode in (0, 1), quiet.stderr[-2000:]
    console = quiet.stdout + quiet.stderr
    assert "[6/6] validate" in console and "budget" in console
    assert THIRD_PARTY.findall(console) == []
    (tmp_path / "loud").mkdir()
    loud = subprocess.run([*cli, "--verbose", *args], cwd=tmp_path / "loud", capture_output=True, text=True)
    assert loud.returncode in (0, 1), loud.stderr[-2000:]
    assert THIRD_PARTY.findall(loud.stdout + loud.stderr)  # captured, not thrown away
