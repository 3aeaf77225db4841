"""``tcm warm --backend vllm``: run vLLM in a container so it compiles into a host directory.

Through docker-py against Docker or podman's Docker-compatible API (``podman system service``).
The output dir is mounted as the vLLM cache (``VLLM_CACHE_ROOT``); GPUs are passed as CDI
devices (podman) or a device request (docker) for CUDA, as ``/dev/kfd`` and ``/dev/dri`` for
ROCm. The Hugging Face token is read from a file (or ``HF_TOKEN``) and given to the engine in
the container's environment through the API: it never appears in a command line, a log line
or a message. No TTY; a timeout kills the container.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ImageError, MissingDependency, ToolFailed, UsageError
from ..oci.engine import engine_url

DEFAULT_IMAGE = "docker.io/vllm/vllm-openai:latest"
CONTAINER_CACHE = "/root/.cache/vllm"


@dataclass
class VllmWarm:
    """What to run: the model vLLM serves, in which image, on which engine, with which GPUs."""

    model: str
    image: str = DEFAULT_IMAGE
    engine: str = "podman"
    token_file: Path | None = None
    container_cache_dir: str = CONTAINER_CACHE
    rocm: bool = False
    gpus: bool = True
    timeout: float = 3600.0
    extra_args: list[str] = field(default_factory=list)


def _token(spec: VllmWarm) -> str | None:
    if spec.token_file is not None:
        try:
            return spec.token_file.read_text().strip() or None
        except OSError as exc:
            raise UsageError(
                f"cannot read the token file {spec.token_file}: {exc.strerror}"
            ) from None
    return os.environ.get("HF_TOKEN") or None


def run_vllm(spec: VllmWarm, output: Path) -> dict[str, Any]:
    try:
        import docker
        from docker.types import DeviceRequest, Ulimit
    except ImportError:
        raise MissingDependency("docker-py (for the vllm backend)", "builder") from None
    output.mkdir(parents=True, exist_ok=True)
    env = {"VLLM_CACHE_ROOT": spec.container_cache_dir}
    token = _token(spec)
    if token:
        env["HF_TOKEN"] = token
    kwargs: dict[str, Any] = {}
    if spec.gpus and spec.rocm:
        kwargs.update(devices=["/dev/kfd:/dev/kfd", "/dev/dri:/dev/dri"], group_add=["video"])
    elif spec.gpus and spec.engine == "podman":
        kwargs["devices"] = ["nvidia.com/gpu=all"]  # CDI
    elif spec.gpus:
        kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if spec.engine == "podman":  # crun's defaults fail on some VMs; explicit limits work
        kwargs["ulimits"] = [
            Ulimit(name="nofile", soft=1024, hard=1024),
            Ulimit(name="nproc", soft=1024, hard=1024),
        ]
    try:
        client = docker.DockerClient(base_url=engine_url(spec.engine))
    except docker.errors.DockerException as exc:
        raise ToolFailed(f"cannot reach the {spec.engine} API: {exc}") from None
    try:
        container = client.containers.run(
            spec.image,
            ["--model", spec.model, *spec.extra_args],
            environment=env,
            volumes={str(output.resolve()): {"bind": spec.container_cache_dir, "mode": "rw"}},
            detach=True,
            tty=False,
            stdin_open=False,
            **kwargs,
        )
    except docker.errors.ImageNotFound:
        raise ImageError(
            f"image {spec.image} is not available to {spec.engine}: pull it first "
            f"({spec.engine} pull {spec.image})"
        ) from None
    except docker.errors.DockerException as exc:
        raise ToolFailed(
            f"{spec.engine} could not start {spec.image}: {_scrub(str(exc), token)}"
        ) from None
    try:
        try:
            status = container.wait(timeout=spec.timeout)
        except Exception:
            container.kill()
            raise ToolFailed(f"vLLM did not finish within {spec.timeout:.0f} s; killed") from None
        logs = _scrub(container.logs(stdout=True, stderr=True).decode(errors="replace"), token)
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)
        client.close()
    code = status.get("StatusCode", 1)
    if code != 0:
        tail = "\n".join(logs.strip().splitlines()[-20:])
        raise ToolFailed(f"vLLM exited with {code}:\n{tail}")
    files = sum(1 for p in output.rglob("*") if p.is_file())
    return {"returncode": code, "files": files, "output": str(output)}


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text
