"""Optional: build the same image with podman or docker, for users whose tooling expects it.

The engine builds ``FROM scratch`` with the layer's two directories copied in and the same
labels, through the Docker-compatible API (docker-py, the ``builder`` extra; podman serves that
API too: ``podman system service``). The result is saved from the engine as a docker archive
and copied to the requested reference like any other image. The engine adds its own metadata,
so only tcm's own builder promises a reproducible digest.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from ..cache.entries import Entry
from ..errors import MissingDependency, ToolFailed
from .image import MANIFEST_PATH, canonical, entry_manifest_row, labels_for
from .layout import DockerArchive

SOCKETS = {
    "podman": [
        os.path.join(os.environ.get("XDG_RUNTIME_DIR", "/run/user/0"), "podman", "podman.sock"),
        "/run/podman/podman.sock",
    ],
    "docker": ["/var/run/docker.sock", "/run/docker.sock"],
}


def engine_url(builder: str) -> str:
    """Where the engine's API listens: CONTAINER_HOST / DOCKER_HOST, else its usual socket."""
    for var in ("CONTAINER_HOST", "DOCKER_HOST"):
        if os.environ.get(var):
            return os.environ[var]
    for sock in SOCKETS[builder]:
        if os.path.exists(sock):
            return f"unix://{sock}"
    hint = "podman system service --time=0 &" if builder == "podman" else "start dockerd"
    raise ToolFailed(
        f"no {builder} API socket found (tried {', '.join(SOCKETS[builder])}); "
        f"run `{hint}` or set CONTAINER_HOST"
    )


def _context(entries: list[Entry], labels: dict[str, str], group_for: Any) -> bytes:
    """A build context: the Dockerfile and the two directories of the MCV layer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tar.addfile(ti, io.BytesIO(data))

        label_lines = "".join(
            f"LABEL {json.dumps(k)}={json.dumps(v)}\n" for k, v in sorted(labels.items())
        )
        # one COPY of one tree: one layer, as tcm's own builder makes
        add("Dockerfile", ("FROM scratch\nCOPY layer/ /\n" + label_lines).encode())
        rows = [entry_manifest_row(e) for e in entries]
        add(f"layer/{MANIFEST_PATH}", canonical({"triton": rows}))
        for e in sorted(entries, key=lambda e: e.key):
            for f in e.files:
                name = f"layer/io.triton.cache/{e.key}/{f.name}"
                if f.kind == "group":
                    add(name, group_for(e))
                else:
                    add(name, (e.path / f.name).read_bytes())
    return buf.getvalue()


def build_with_engine(
    builder: str,
    entries: list[Entry],
    tag: str,
    *,
    mount_path: str | None = None,
    producer: dict[str, Any] | None = None,
) -> DockerArchive:
    """Build with podman or docker; return the result as a docker archive source."""
    try:
        import docker
    except ImportError:
        raise MissingDependency("docker-py (for --builder)", "builder") from None
    from .image import group_for_image

    labels = labels_for(entries, producer)
    context = _context(entries, labels, lambda e: group_for_image(e, mount_path))
    try:
        client = docker.DockerClient(base_url=engine_url(builder))
    except docker.errors.DockerException as exc:
        raise ToolFailed(f"cannot reach the {builder} API: {exc}") from None
    try:
        image, _logs = client.images.build(
            fileobj=io.BytesIO(context), custom_context=True, tag=tag, rm=True
        )
        fd, path = tempfile.mkstemp(prefix="tcm-engine-", suffix=".tar")
        with os.fdopen(fd, "wb") as f:
            for chunk in image.save(named=True):
                f.write(chunk)
    except docker.errors.DockerException as exc:
        raise ToolFailed(f"{builder} build failed: {exc}") from None
    finally:
        client.close()
    return DockerArchive(Path(path))
