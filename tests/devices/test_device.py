"""validate --device ssh://: a real OpenSSH sshd on 127.0.0.1, started by the test with throwaway
keys; the bundle, the standalone runner and the inputs go over ssh and the results come back."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgerec.core.errors import EdgerecError
from edgerec.devices.device import SshDevice

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
needs_sshd = pytest.mark.skipif(not Path(SSHD).exists(), reason="openssh-server is not installed (.ci/run installs it)")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    root = tmp_path_factory.mktemp("sshd")
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    (root / "authorized_keys").write_text((root / "client.pub").read_text())
    os.chmod(root / "authorized_keys", 0o600)
    port = _free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PermitRootLogin yes\nPidFile {root / 'sshd.pid'}\nSetEnv PATH={os.environ['PATH']}\n"
    )
    if os.geteuid() == 0:  # sshd's privilege-separation directory
        Path("/run/sshd").mkdir(exist_ok=True)
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")], stderr=subprocess.PIPE)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if server.poll() is not None:  # sshd refused to run here (e.g. no privilege-separation user)
            pytest.skip(f"sshd could not start in this environment: {server.stderr.read().decode()[-300:]}")
        time.sleep(0.1)
    options = f"-i {root / 'client'} -o StrictHostKeyChecking=no -o UserKnownHostsFile={root / 'known_hosts'}"
    old = os.environ.get("EDGEREC_SSH_OPTIONS")
    os.environ["EDGEREC_SSH_OPTIONS"] = options
    yield {"port": port, "user": os.environ.get("USER") or __import__("getpass").getuser()}
    server.terminate()
    server.wait(timeout=10)
    if old is None:
        os.environ.pop("EDGEREC_SSH_OPTIONS", None)
    else:
        os.environ["EDGEREC_SSH_OPTIONS"] = old


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, data_dir):
    from edgerec.core.models import Shape
    from edgerec.core.training import TrainConfig
    from edgerec.stages.export import ExportConfig, export
    from edgerec.stages.teacher import TeacherConfig, train_teacher

    root = tmp_path_factory.mktemp("device-bundle")
    train_teacher(
        data_dir,
        root / "teacher",
        TeacherConfig(
            shape=Shape(hidden=16, layers=1, heads=2, intermediate=32, max_len=12),
            train=TrainConfig(epochs=2, batch_size=16, lr=1e-2),
        ),
    )
    export(root / "teacher", data_dir, root / "fp32", ExportConfig(target="x86_64-vnni"))
    return root / "fp32"


@needs_sshd
def test_validate_on_a_device_over_ssh(tmp_path, data_dir, bundle, sshd):
    from edgerec.stages.validate import ValidateConfig, validate

    url = f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}"
    remote = validate(
        bundle,
        data_dir,
        ValidateConfig(target="x86_64-vnni", warmup=2, device=url, device_python=sys.executable),
        report_dir=tmp_path / "remote",
        log=lambda m: None,
    )
    local = validate(
        bundle,
        data_dir,
        ValidateConfig(target="x86_64-vnni", warmup=2),
        report_dir=tmp_path / "local",
        log=lambda m: None,
    )
    assert remote["device"] == url and "measured on ssh://" in remote["note"]
    ndcg = {
        r: x["runtimes"]["onnxruntime"]["metrics"]["NDCG@10"]["mean"] for r, x in (("remote", remote), ("local", local))
    }
    assert ndcg["remote"] == pytest.approx(ndcg["local"])  # the same scores came back
    assert remote["runtimes"]["onnxruntime"]["latency"]["runs"] == remote["users"]


def test_a_refused_connection_is_one_clear_error(bundle, data_dir):
    port = _free_port()  # nothing listens there
    device = SshDevice.parse(f"ssh://127.0.0.1:{port}")
    with pytest.raises(EdgerecError, match="cannot reach device ssh://127.0.0.1"):
        device.run_runner("onnxruntime", bundle / "model.onnx", __import__("numpy").zeros((1, 12), "int64"))
    with pytest.raises(EdgerecError, match="must look like ssh://"):
        SshDevice.parse("http://host")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgerec",
            "validate",
            "-T",
            "x86_64-vnni",
            "-b",
            str(bundle),
            "-d",
            str(data_dir),
            "--device",
            f"ssh://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr and "cannot reach device" in run.stderr
