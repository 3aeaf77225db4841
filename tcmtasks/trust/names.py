"""Docker reference names as containers/image compares them: normalised (``busybox`` is
``docker.io/library/busybox``), with the tag and digest kept apart, and the scopes a name
falls under, most specific first (policy.json's ``transports.docker`` and registries.d)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..oci.refs import ImageRef, parse


@dataclass(frozen=True)
class DockerName:
    name: str  # HOST[:PORT]/REPO, normalised
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        return (
            self.name
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
        )

    @property
    def host(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def path(self) -> str:
        """The repository without its host: the lookaside store's directory for it."""
        return self.name.split("/", 1)[1]


def parse_name(text: str, what: str = "reference") -> DockerName:
    """``HOST/REPO[:TAG][@DIGEST]`` (as a signature or a policy writes it) normalised."""
    try:
        ref = parse("docker://" + text)
    except UsageError as exc:
        raise UsageError(f"{what} {text!r} is not a docker reference: {exc}") from None
    named, _, _ = text.partition("@")
    tagged = ":" in named.rsplit("/", 1)[-1]
    return DockerName(f"{ref.host}/{ref.repo}", ref.tag if tagged else None, ref.digest)


def name_of(ref: ImageRef) -> DockerName:
    """The name a docker:// reference is known by: by digest when it has one, else by tag."""
    return DockerName(f"{ref.host}/{ref.repo}", None if ref.digest else ref.tag, ref.digest)


def ref_matches_prefix(ref: str, prefix: str) -> bool:
    """containers/image's rule: ``prefix`` is the whole of ``ref`` or ends where a path
    component, tag or digest starts (``busybox`` matches ``busybox:1`` but not ``busyboxy``)."""
    if len(ref) < len(prefix) or not ref.startswith(prefix):
        return False
    return len(ref) == len(prefix) or ref[len(prefix)] in "/:@"


def docker_scopes(name: DockerName) -> list[str]:
    """The policy scopes of a docker name, most specific first: the reference itself, the
    repository, each parent namespace, the host, then ``*.DOMAIN`` wildcards of the host."""
    scopes = [str(name), name.name] if str(name) != name.name else [name.name]
    ns = name.name
    while "/" in ns:
        ns = ns.rsplit("/", 1)[0]
        scopes.append(ns)
    host = ns.split(":", 1)[0]  # wildcards ignore the port
    while "." in host:
        host = host.split(".", 1)[1]
        scopes.append(f"*.{host}")
    return scopes


def local_scopes(ref: ImageRef) -> list[str]:
    """The policy scopes of a local layout or archive: ``PATH:TAG``, the path, its parents."""
    path = Path(ref.path or ".").resolve()
    scopes = [f"{path}:{ref.tag}"] if ref.transport != "docker-archive" else []
    scopes.append(str(path))
    scopes.extend(str(p) for p in path.parents)
    return scopes
