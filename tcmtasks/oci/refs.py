"""Image references in the containers-transports style users know from skopeo and podman."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

FORMS = (
    "oci:DIR[:TAG] (a local OCI layout; the default), "
    "oci-archive:FILE[:TAG], docker-archive:FILE (read only), "
    "docker://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]"
)

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REPO = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class ImageRef:
    transport: str  # "oci", "oci-archive", "docker-archive", "docker"
    path: Path | None = None  # local transports
    host: str = ""  # docker
    repo: str = ""
    tag: str = "latest"
    digest: str | None = None

    def __str__(self) -> str:
        if self.transport == "docker":
            ref = f"@{self.digest}" if self.digest else f":{self.tag}"
            return f"docker://{self.host}/{self.repo}{ref}"
        if self.transport == "docker-archive":
            return f"docker-archive:{self.path}"
        return f"{self.transport}:{self.path}:{self.tag}"


def _bad(text: str, why: str) -> UsageError:
    return UsageError(f"bad image reference {text!r}: {why}. Accepted forms: {FORMS}")


def _path_and_tag(text: str, rest: str) -> tuple[Path, str]:
    # oci:/a/b:tag -> the last ':' separates a tag when what follows is a valid tag
    path, sep, tag = rest.rpartition(":")
    if sep and path and _TAG.fullmatch(tag) and "/" not in tag:
        return Path(path), tag
    if not rest:
        raise _bad(text, "no path")
    return Path(rest), "latest"


def parse(text: str) -> ImageRef:
    if text.startswith("docker://"):
        rest = text[len("docker://") :]
        if "/" not in rest and "." not in rest.split(":")[0] and rest:
            rest = f"docker.io/{rest}"  # docker://busybox:1.36 means Docker Hub
        host, _, path = rest.partition("/")
        if not host or not path:
            raise _bad(text, "docker:// needs HOST/REPO")
        if "." not in host and ":" not in host and host != "localhost":
            host, path = "docker.io", rest  # docker://library/x style: Docker Hub
        digest = None
        if "@" in path:
            path, _, digest = path.partition("@")
            if not _DIGEST.fullmatch(digest):
                raise _bad(text, f"{digest!r} is not a sha256 digest")
        last = path.rsplit("/", 1)[-1]
        repo, _, tag = path.rpartition(":") if ":" in last else (path, "", "")
        tag = tag or "latest"
        if not _REPO.fullmatch(repo):
            raise _bad(text, f"repository {repo!r} must be lower-case letters, digits, . _ - /")
        if not _TAG.fullmatch(tag):
            raise _bad(text, f"tag {tag!r} may hold letters, digits, _ . - (no '+')")
        if host == "docker.io" and "/" not in repo:
            repo = f"library/{repo}"
        return ImageRef("docker", host=host, repo=repo, tag=tag, digest=digest)
    for transport in ("oci-archive", "docker-archive", "oci"):
        prefix = transport + ":"
        if text.startswith(prefix):
            if transport == "docker-archive":
                if len(text) == len(prefix):
                    raise _bad(text, "no file")
                return ImageRef(transport, path=Path(text[len(prefix) :]))
            where, tag = _path_and_tag(text, text[len(prefix) :])
            return ImageRef(transport, path=where, tag=tag)
    raise _bad(text, "unknown transport")
