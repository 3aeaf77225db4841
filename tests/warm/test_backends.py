"""The command and vllm backends, for real: a command against the output dir, and a container
run by podman (a tiny busybox image standing in for vLLM) writing into the mounted cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from tcmtasks import scan_root
from tests.conftest import REPO
from tests.support.cuda_utils import cuda_utils_lookup
from tests.support.tools import require_modules, require_tools

COMPILE = [sys.executable, "-m", "tests.support.compile_kernels"]


def test_command_backend_reports_only_new_entries(tcm, cache):
    before = {e.key for e in scan_root(cache)}
    proc = tcm(
        "warm",
        "--backend",
        "command",
        "-o",
        cache,
        "--json",
        "--",
        *COMPILE,
        "cuda:90",
        "cuda:80",
        "hip:gfx942",
        extra_env={"PYTHONPATH": str(REPO)},
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["existing_entries"] == 9 and report["new_entries"] == 0
    shutil.rmtree(cache)
    proc = tcm(
        "warm",
        "--backend",
        "command",
        "-o",
        cache,
        "--json",
        "--",
        *COMPILE,
        "cuda:90",
        extra_env={"PYTHONPATH": str(REPO)},
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["new_entries"] == 3 and set(report["new_keys"]) < before
    assert json.loads((cache / ".tcm-producer.json").read_text())["backend"] == "command"


def test_command_backend_inductor_dir_and_exit_code(tcm, tmp_path):
    out = tmp_path / "o"
    tcm(
        "warm",
        "--backend",
        "command",
        "-o",
        out,
        "--inductor",
        "--",
        "sh",
        "-c",
        'echo "${TRITON_CACHE_DIR:-unset} $TORCHINDUCTOR_CACHE_DIR" '
        '> "$TORCHINDUCTOR_CACHE_DIR/../seen"',
        extra_env={"TRITON_CACHE_DIR": "/elsewhere"},
    )
    # the output is the Inductor dir, and Triton is left to put its kernels inside it
    triton_dir, inductor_dir = (tmp_path / "seen").read_text().split()
    assert triton_dir == "unset" and inductor_dir == str(out)
    assert (
        tcm("warm", "--backend", "command", "-o", out, "--", "sh", "-c", "exit 3", ok=3).returncode
        == 3
    )
    assert (
        "command not found"
        in tcm("warm", "--backend", "command", "-o", out, "--", "no-such-cmd-zz", ok=2).stderr
    )


def test_command_backend_keeps_the_helpers_the_command_built(tcm, tmp_path):
    """Under --inductor a torch.compile process builds cuda_utils in Triton's default cache,
    not in the output (warm/command_backend.py): a command whose Triton builds it there (the
    first thing Inductor's kernel modules make it do) leaves it in the output's triton/0,
    where the workload's Triton, unable to compile C, finds it."""
    ask = (
        "import os\n"
        "assert 'TRITON_CACHE_DIR' not in os.environ\n"
        "from tcmtasks.warm.helpers import libcuda_for_building\n"
        "from triton.backends.nvidia import driver\n"
        "with libcuda_for_building():\n"
        "    try:\n        driver.CudaUtils()\n    except ImportError:\n        pass\n"
    )
    out = tmp_path / "o"
    home = tmp_path / "home"
    got = json.loads(
        tcm("warm", "--backend", "command", "-o", out, "--inductor", "--json", "--",
            sys.executable, "-c", ask, extra_env={"PYTHONPATH": str(REPO)}).stdout
    )  # fmt: skip
    assert got["helpers"] == ["cuda_utils"]
    assert not list(home.glob(".triton/cache/*/cuda_utils*"))  # not the user's cache
    modules = [e for e in scan_root(out / "triton" / "0") if e.kind == "module"]
    assert [e.name for e in modules] == ["cuda_utils"]
    # (this Triton, 3.6.0, keys helpers by source and platform alone: any libcuda dir)
    assert cuda_utils_lookup(sys.executable, out / "triton" / "0", ["/nonexistent"]) == "found"


@pytest.fixture
def podman_with_fake_vllm(tmp_path_factory):
    require_tools("podman", "busybox", "runc")
    require_modules("docker")
    base = tmp_path_factory.mktemp("podman")
    flags = [
        "podman",
        "--storage-driver",
        "vfs",
        "--root",
        str(base / "root"),
        "--runroot",
        str(base / "run"),
        "--tmpdir",
        str(base / "tmp"),
        "--runtime",
        "runc",
    ]
    ctx = base / "ctx"
    ctx.mkdir()
    shutil.copy(shutil.which("busybox"), ctx / "busybox")
    (ctx / "warm.sh").write_text(
        "set -e\n"
        'd="$VLLM_CACHE_ROOT/torch_compile_cache/abc123/rank_0_0/triton_cache/'
        + "A"
        * 52
        + '"\n/bin/busybox mkdir -p "$d"\n'
        'echo "{\\"model\\": \\"$2\\"}" > "$d/warm.json"\n'
        'if [ -n "$HF_TOKEN" ]; then echo present > "$VLLM_CACHE_ROOT/token-seen"; fi\n'
        'echo "compiled for $2"\n'
    )
    (ctx / "Containerfile").write_text(
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY warm.sh /warm.sh\n"
        'ENTRYPOINT ["/bin/busybox", "sh", "/warm.sh"]\n'
    )
    subprocess.run(
        [*flags, "build", "-q", "-t", "localhost/fake-vllm:test", str(ctx)],
        check=True,
        capture_output=True,
    )
    sock = base / "podman.sock"
    proc = subprocess.Popen(
        [*flags, "system", "service", "--time=0", f"unix://{sock}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        if sock.exists():
            break
        time.sleep(0.1)
    yield f"unix://{sock}"
    proc.terminate()
    proc.wait(10)


def test_vllm_backend_in_a_real_container(tcm, tmp_path, podman_with_fake_vllm):
    token = "hf_TopSecret_0123456789"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    out, tarball = tmp_path / "vllm-cache", tmp_path / "vllm-cache.tar.gz"
    proc = tcm(
        "warm",
        "--backend",
        "vllm",
        "--model",
        "facebook/opt-125m",
        "--image",
        "localhost/fake-vllm:test",
        "--engine",
        "podman",
        "--no-gpu",
        "--hf-token-file",
        token_file,
        "-o",
        out,
        "--tarball",
        tarball,
        "-v",
        extra_env={"CONTAINER_HOST": podman_with_fake_vllm},
    )
    assert token not in proc.stdout + proc.stderr
    warm = out / "torch_compile_cache" / "abc123" / "rank_0_0" / "triton_cache" / ("A" * 52)
    assert json.loads((warm / "warm.json").read_text()) == {"model": "facebook/opt-125m"}
    assert (out / "token-seen").read_text().strip() == "present"
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert any(n.endswith("warm.json") for n in names) and "./.tcm-producer.json" in names
    record = json.loads((out / ".tcm-producer.json").read_text())
    assert record["image"] == "localhost/fake-vllm:test" and record["backend"] == "vllm"
    roots = json.loads(tcm("index", "-c", out, "--json").stdout)["roots"]
    # the rank dir is found as a vLLM Triton root, and the dir itself as a vLLM cache
    assert sorted((r["origin"], r["kind"]) for r in roots) == [("vllm", "triton"), ("vllm", "vllm")]


def test_vllm_backend_errors(tcm, tmp_path, podman_with_fake_vllm):
    env = {"CONTAINER_HOST": podman_with_fake_vllm}
    proc = tcm(
        "warm",
        "--backend",
        "vllm",
        "--model",
        "m",
        "--image",
        "localhost/nope:1",
        "--no-gpu",
        "-o",
        tmp_path / "o",
        ok=3,
        extra_env=env,
    )
    assert "not available" in proc.stderr or "could not start" in proc.stderr
    assert "needs --model" in tcm("warm", "--backend", "vllm", "-o", tmp_path / "o", ok=2).stderr
