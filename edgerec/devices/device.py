"""Remote devices for `edgerec validate --device ssh://user@host[:port]`.

The device needs only Python, NumPy and its runtime (tflite_runtime, ai_edge_litert or
onnxruntime), not edgerec: the model file, the standalone `device_runner.py` and the encoded test
inputs are streamed over ssh (`cat > file`, so no scp/sftp subsystem is needed), the runner runs
there, and its `.npz` result comes back the same way. The system's OpenSSH client is used, so keys,
agents and ~/.ssh/config work as they do for the user; `--ssh-key` and `EDGEREC_SSH_OPTIONS` add
options.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from edgerec.core.errors import EdgerecError
from edgerec.devices.envs import save_inputs

RUNNER = Path(__file__).with_name("device_runner.py")


@dataclass(frozen=True)
class SshDevice:
    url: str
    host: str
    user: str | None = None
    port: int = 22
    python: str = "python3"
    key: str | None = None

    @classmethod
    def parse(cls, url: str, python: str = "python3", key: str | None = None) -> SshDevice:
        if key is not None and not Path(key).is_file():
            raise EdgerecError(f"{key}: no such key file (--ssh-key)")
        parsed = urlparse(url)
        if parsed.scheme != "ssh" or not parsed.hostname:
            raise EdgerecError(f"--device must look like ssh://user@host[:port], got {url!r}")
        try:
            port = parsed.port or 22
        except ValueError:
            raise EdgerecError(f"--device {url!r}: the port is not a number") from None
        return cls(url=url, host=parsed.hostname, user=parsed.username, port=port, python=python, key=key)

    def _ssh(self, command: str, stdin=None, stdout=None) -> subprocess.CompletedProcess:
        target = f"{self.user}@{self.host}" if self.user else self.host
        args = ["ssh", "-p", str(self.port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        if self.key:
            args += ["-i", self.key]
        args += shlex.split(os.environ.get("EDGEREC_SSH_OPTIONS", ""))
        result = subprocess.run(
            [*args, target, command], stdin=stdin, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE
        )
        if result.returncode != 0:
            lines = [line for line in result.stderr.decode(errors="replace").splitlines() if line.strip()]
            last = lines[-1] if lines else f"exit code {result.returncode}"
            if result.returncode == 255:
                raise EdgerecError(f"cannot reach device {self.url}: {last}")
            raise EdgerecError(f"device {self.url}: {last}")
        return result

    def _put(self, local: Path, remote: str) -> None:
        with open(local, "rb") as source:
            self._ssh(f"cat > {shlex.quote(remote)}", stdin=source)

    def run_runner(
        self, runtime: str, model: Path, input_ids, threads: int = 1, warmup: int = 0, step: bool = False
    ) -> dict:
        """The standalone runner on the device; same result as `envs.run_runner`."""
        folder = self._ssh("mktemp -d").stdout.decode().strip()
        if not folder.startswith("/"):
            raise EdgerecError(f"device {self.url}: mktemp -d gave {folder!r}")
        remote = shlex.quote(folder)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                inputs = save_inputs(Path(tmp), input_ids)
                self._put(RUNNER, f"{folder}/device_runner.py")
                self._put(Path(model), f"{folder}/{Path(model).name}")
                self._put(inputs, f"{folder}/{inputs.name}")
                command = f"{inputs.name} out.npz --threads {int(threads)} --warmup {int(warmup)}"
                self._ssh(
                    f"cd {remote} && {shlex.quote(self.python)} device_runner.py {shlex.quote(Path(model).name)} "
                    + command
                    + (" --step" if step else "")
                )
                with open(Path(tmp) / "out.npz", "wb") as sink:
                    self._ssh(f"cat {remote}/out.npz", stdout=sink)
                try:
                    with np.load(Path(tmp) / "out.npz", allow_pickle=False) as out:
                        return {k: out[k] for k in out.files}
                except Exception as exc:  # a truncated transfer, an old NumPy writing oddly
                    raise EdgerecError(f"device {self.url}: unreadable runner output ({exc})") from None
        finally:
            try:
                self._ssh(f"rm -rf {remote}")
            except EdgerecError:
                pass
