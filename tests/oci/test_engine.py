"""--builder podman: the same labels and layer layout through a real podman API service."""

from __future__ import annotations

import json
import subprocess
import tarfile
import time

import pytest

from tcmtasks.oci.layout import OciLayout
from tests.oci.test_image import build, layer_members
from tests.support.tools import require_modules, require_tools


@pytest.fixture
def podman_socket(tmp_path_factory):
    require_tools("podman")
    require_modules("docker")
    tmp_path = tmp_path_factory.mktemp("podman")
    sock = tmp_path / "podman.sock"
    proc = subprocess.Popen(
        [
            "podman",
            "--storage-driver",
            "vfs",
            "--root",
            str(tmp_path / "root"),
            "--runroot",
            str(tmp_path / "run"),
            "system",
            "service",
            "--time=0",
            f"unix://{sock}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):  # a fresh storage root takes a few seconds the first time
        if sock.exists():
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(
            "podman system service did not start:\n" + (tmp_path / "podman.log").read_text()[-2000:]
        )
    yield f"unix://{sock}"
    proc.terminate()
    proc.wait(10)


def test_podman_builder_same_labels_and_layout(tcm, cache, tmp_path, podman_socket):
    env = {"CONTAINER_HOST": podman_socket}
    out = json.loads(
        tcm(
            "package",
            cache,
            f"oci:{tmp_path / 'eng'}:v1",
            "--builder",
            "podman",
            "--json",
            extra_env=env,
        ).stdout
    )
    assert out["entries"] == 9 and out["builder"] == "podman"
    ours, store = build(cache, tmp_path / "ours")
    info = json.loads(tcm("inspect", f"oci:{tmp_path / 'eng'}:v1", "--json").stdout)
    assert len(info["layers"]) == 1
    theirs = {k: v for k, v in info["labels"].items() if not k.startswith("io.buildah")}
    assert {k: theirs[k] for k in ours.labels} == ours.labels
    assert len(info["entries"]) == 9
    eng = OciLayout(tmp_path / "eng", "v1")
    manifest = json.loads(eng.manifest()[0])
    with (
        eng.open_blob(manifest["layers"][0]["digest"]) as f,
        tarfile.open(fileobj=f, mode="r|*") as tar,
    ):
        engine_files = sorted(m.name.lstrip("./") for m in tar if m.isfile())
    our_files = sorted(m.name for m, _ in layer_members(store, ours) if m.isfile())
    assert engine_files == our_files


def test_missing_engine_is_a_clear_error(tcm, cache, tmp_path):
    proc = tcm(
        "package",
        cache,
        f"oci:{tmp_path / 'x'}:v1",
        "--builder",
        "docker",
        ok=5,
        extra_env={"DOCKER_HOST": "", "CONTAINER_HOST": ""},
    )
    assert "no docker API socket" in proc.stderr or "cannot reach the docker API" in proc.stderr
    assert (
        "unknown builder"
        in tcm("package", cache, f"oci:{tmp_path / 'x'}:v1", "--builder", "kaniko", ok=2).stderr
    )
