"""The emulated ARM device's userland, set up once into edgerec's cache.

Set up once into edgerec's cache (`setup()`, about 70 s and 450 MB; design.md "Verified here"):
an aarch64 Debian userland from `debootstrap --foreign` whose packages are unpacked with
`dpkg-deb -x` (the emulated second stage takes 8 minutes and is not needed to run Python), one
site-packages folder per runtime from the host's pip with aarch64 wheel tags, and QEMU's
instruction-counting plugin compiled from the `insn.c` example in Debian's qemu source package
(Debian ships no TCG plugins). Needs root with apt, or the tools already installed; what is
missing is named in one line. Written here because no library packages an emulated-device
runner: qemu, debootstrap and pip do the work.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edgerec.core.datasets import cache_dir
from edgerec.core.errors import EdgerecError

SUITE = "bookworm"
PYTHON = "usr/bin/python3.11"
# aarch64 wheels per runtime; a runtime gets its own folder, as an app ships one runtime.
SITES = {
    "onnxruntime": ["onnxruntime==1.32.0", "numpy<2"],
    "litert": ["ai-edge-litert==2.3.0", "numpy<2"],
    "tflite-runtime": ["tflite-runtime==2.14.0", "numpy<2"],
}
# Runtimes set up the first time a bundle needs them (`runtime_root`), not in `setup()`: large,
# and only for bundles that ship their format. ExecuTorch's aarch64 wheels need torch, and PyPI's
# aarch64 torch is a CUDA build from 2.11 on (about 420 MB, and its libtorch_cpu needs CUDA's
# libraries to load): executorch 1.1.0 with torch 2.10.0 (the CPU build, 145 MB) is the newest
# pair that runs here. It loads the .pte files the host's executorch 1.4.1 writes (the same
# flatbuffer program and XNNPACK delegate schema); `--no-deps`: the wheels' declared dependencies
# are those of ExecuTorch's exporter (coremltools, scikit-learn, ...), not of its runtime.
ON_DEMAND = {
    "executorch": [
        "executorch==1.1.0",
        "torch==2.10.0",
        "torchao==0.15.0",
        "numpy<2",
        "flatbuffers",
        "ruamel.yaml",
        "tabulate",
        "tqdm",
        "packaging",
        "pyyaml",
        "typing-extensions",
        "sympy",
        "mpmath",
        "networkx",
        "jinja2",
        "markupsafe",
        "filelock",
        "fsspec",
        "opt-einsum",
    ],
}
# tflite-runtime 2.14 is manylinux_2_34: every tag must be listed, or pip silently picks an
# older ai-edge-litert (design.md).
WHEEL_TAGS = ["manylinux2014_aarch64"] + [f"manylinux_2_{v}_aarch64" for v in (17, 24, 26, 27, 28, 31, 34, 35, 36)]
APT_PACKAGES = ["qemu-user-static", "qemu-user", "debootstrap", "libglib2.0-dev", "pkg-config"]


class EmulatorUnavailable(EdgerecError):
    """This machine cannot run the emulator (tools missing and not installable here)."""


def switched_off(enabled: bool = True) -> bool:
    """True when the caller's flag (--no-emulate) or EDGEREC_EMULATE=0 turns emulation off."""
    return not enabled or os.environ.get("EDGEREC_EMULATE") == "0"


OFF = "--no-emulate or EDGEREC_EMULATE=0"


def root() -> Path:
    return cache_dir() / "emulator" / f"{SUITE}-arm64"


def _missing_tools() -> list[str]:
    return [tool for tool in ("qemu-aarch64-static", "debootstrap", "dpkg-deb") if shutil.which(tool) is None]


def _apt_install(log) -> None:
    """Install the host tools with apt where this process may (root, apt-get present)."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return  # the caller names what is missing
    log("emulator: installing " + ", ".join(APT_PACKAGES) + " with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES],
    ):
        result = subprocess.run(args, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["failed"])[-1]
            raise EdgerecError(f"emulator: `{' '.join(args[:2])}` failed: {last}")


def _mirror() -> str:
    """The Debian mirror the host's apt uses (deb822 or one-line sources), else deb.debian.org."""
    for path in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        found = re.search(r"^URIs:\s*(\S+)", text, re.M) or re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)
        if found and "security" not in found.group(1):
            return found.group(1)
    return "http://deb.debian.org/debian"


def _run(args, what: str, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, **kw)
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr or result.stdout or "").strip().splitlines() if ln.strip()]
        raise EdgerecError(f"emulator: {what} failed: {lines[-1] if lines else f'exit {result.returncode}'}")
    return result


def setup(log=print) -> Path:
    """The emulator's folder, set up (once) if needed. A half-built folder is removed."""
    folder = root()
    if (folder / ".ready").is_file():
        return folder
    if _missing_tools():
        _apt_install(log)
    missing = _missing_tools()
    if missing:
        raise EmulatorUnavailable(
            f"the ARM emulator needs {', '.join(missing)}: install them with "
            f"`apt-get install {' '.join(APT_PACKAGES)}` (Debian/Ubuntu, as root)"
        )
    shutil.rmtree(folder, ignore_errors=True)
    work, wheels = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".wheels.tmp")
    for part in (work, wheels):
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
    try:
        # the wheels first (beside the userland, which debootstrap wants to itself): a runtime
        # with no aarch64 wheel fails in seconds, not after the userland
        for runtime, packages in SITES.items():
            log(f"emulator: aarch64 wheels for {runtime}")
            _aarch64_wheels(wheels / runtime, packages, runtime)
        log(f"emulator: aarch64 Debian {SUITE} userland (debootstrap, about 1 minute)")
        _run(
            [
                "debootstrap",
                "--arch=arm64",
                "--variant=minbase",
                "--foreign",
                "--include=python3.11",
                SUITE,
                str(work),
                _mirror(),
            ],
            "debootstrap",
        )
        debs = sorted((work / "var/cache/apt/archives").glob("*.deb"))
        for deb in debs:  # instead of the emulated second stage: Python only needs the files
            _run(["dpkg-deb", "-x", str(deb), str(work)], f"unpacking {deb.name}")
        shutil.rmtree(work / "var/cache/apt/archives", ignore_errors=True)
        # onnxruntime's cpuinfo parses /sys for the CPU list and segfaults on the host's x86
        # one; empty files make it warn instead (design.md).
        cpu = work / "sys/devices/system/cpu"
        cpu.mkdir(parents=True, exist_ok=True)
        for name in ("possible", "present"):
            (cpu / name).write_text("")
        (work / "opt").mkdir(exist_ok=True)
        for runtime in SITES:
            os.replace(wheels / runtime, work / "opt" / runtime)
        plugin = _build_plugin(work, log)
        (work / "plugin.txt").write_text(plugin)
        (work / ".ready").write_text("ok\n")
        os.replace(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
    return folder


def _aarch64_wheels(target: Path, packages: list[str], runtime: str, *extra: str) -> None:
    tags = [arg for tag in WHEEL_TAGS for arg in ("--platform", tag)]
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--target",
            str(target),
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
            *tags,
            *extra,
            *packages,
        ],
        f"pip (aarch64 {runtime})",
    )


def runtime_root(folder: Path, runtime: str, log=print) -> Path:
    """The userland a runtime runs in: the shared one, or for an ON_DEMAND runtime a copy of it
    (hard links: no second 450 MB) with its site-packages, made the first time. ExecuTorch's
    cpuinfo refuses to start (XNNPACK: unsupported hardware) unless /sys lists the CPUs, and
    onnxruntime's segfaults when it does (the empty files of `setup`), so it needs a userland of
    its own."""
    if runtime not in ON_DEMAND:
        return folder
    own = folder.with_name(f"{folder.name}-{runtime}")
    if (own / ".ready").is_file():
        return own
    work = own.with_name(own.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    try:
        log(f"emulator: aarch64 wheels for {runtime} (once, about 1 GB)")
        _aarch64_wheels(work / "opt" / runtime, ON_DEMAND[runtime], runtime, "--no-deps")
        for entry in folder.iterdir():
            if entry.name not in ("opt", ".ready"):
                _run(["cp", "-al", str(entry), str(work / entry.name)], f"linking the userland for {runtime}")
        cpu = work / "sys/devices/system/cpu"
        for name in ("possible", "present"):
            (cpu / name).unlink(missing_ok=True)  # a hard link to the shared userland's empty file
            (cpu / name).write_text("0\n")
        (work / ".ready").write_text("ok\n")
        shutil.rmtree(own, ignore_errors=True)
        os.replace(work, own)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return own


def _build_plugin(work: Path, log) -> str:
    """Compile QEMU's instruction-counting plugin; returns "" or why it could not be built."""
    qemu = shutil.which("qemu-aarch64")
    if qemu is None or shutil.which("gcc") is None or shutil.which("pkg-config") is None:
        return "needs qemu-user (the dynamic qemu-aarch64), gcc and pkg-config with libglib2.0-dev"
    version = subprocess.run(
        ["dpkg-query", "-W", "-f", "${source:Version}", "qemu-user"], capture_output=True, text=True
    ).stdout.strip()
    if not version:
        return "qemu-user is not a Debian package here: its source cannot be fetched with apt"
    log("emulator: QEMU instruction-counting plugin (qemu source, tests/plugin/insn.c)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "parts").mkdir()
        (tmp / "lists" / "partial").mkdir(parents=True)
        (tmp / "parts" / "src.sources").write_text(
            f"Types: deb-src\nURIs: {_mirror()}\nSuites: {SUITE} {SUITE}-updates\nComponents: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
        # a private apt state: the host's package lists stay as they were
        opts = [
            "-o",
            f"Dir::State::Lists={tmp / 'lists'}",
            "-o",
            "Dir::Etc::SourceList=/dev/null",
            "-o",
            f"Dir::Etc::SourceParts={tmp / 'parts'}",
        ]
        try:
            _run(["apt-get", *opts, "update", "-qq"], "apt-get update (deb-src)")
            _run(["apt-get", *opts, "source", "--download-only", f"qemu={version}"], "apt-get source qemu", cwd=tmp)
            tarball = next(tmp.glob("qemu_*.orig.tar.*"))
            _run(
                [
                    "tar",
                    "-xf",
                    str(tarball),
                    "-C",
                    str(tmp),
                    "--wildcards",
                    "*/include/qemu/qemu-plugin.h",
                    "*/tests/plugin/insn.c",
                ],
                "unpacking the qemu source",
            )
            src = next(tmp.glob("qemu-*/"))
            flags = _run(["pkg-config", "--cflags", "--libs", "glib-2.0"], "pkg-config glib-2.0").stdout.split()
            _run(
                [
                    "gcc",
                    "-O2",
                    "-shared",
                    "-fPIC",
                    f"-I{src / 'include/qemu'}",
                    *flags,
                    "-o",
                    str(work / "libinsn.so"),
                    str(src / "tests/plugin/insn.c"),
                ],
                "compiling insn.c",
            )
        except (EdgerecError, StopIteration) as exc:
            return f"could not build it ({exc})"
    return ""
