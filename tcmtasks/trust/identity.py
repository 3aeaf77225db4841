"""policy.json's ``signedIdentity``: which image names a signature's claimed identity may
stand for (containers-policy.json(5); containers/image signature/policy_reference_match.go)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import TrustConfigError
from .names import DockerName, parse_name, ref_matches_prefix

KINDS = (
    "matchExact",
    "matchRepoDigestOrExact",
    "matchRepository",
    "exactReference",
    "exactRepository",
    "remapIdentity",
)


@dataclass(frozen=True)
class Identity:
    kind: str = "matchRepoDigestOrExact"
    reference: DockerName | None = None  # exactReference
    repository: str | None = None  # exactRepository
    prefix: str | None = None  # remapIdentity
    signed_prefix: str | None = None

    def matches(self, image: DockerName, signed: DockerName) -> bool:
        """Whether a signature claiming ``signed`` may vouch for ``image``."""
        if self.kind == "matchExact":
            return bool(image.tag or image.digest) and str(image) == str(signed)
        if self.kind == "matchRepoDigestOrExact":
            return _repo_digest_or_exact(image, signed)
        if self.kind == "matchRepository":
            return image.name == signed.name
        if self.kind == "exactReference":
            return str(signed) == str(self.reference)
        if self.kind == "exactRepository":
            return signed.name == self.repository
        assert self.prefix is not None and self.signed_prefix is not None  # remapIdentity
        text = str(image)
        if ref_matches_prefix(text, self.prefix):
            image = parse_name(self.signed_prefix + text[len(self.prefix) :], "remapped name")
        return _repo_digest_or_exact(image, signed)


def _repo_digest_or_exact(image: DockerName, signed: DockerName) -> bool:
    if image.digest:  # a digest names the content: any tag of that repository vouches
        return image.name == signed.name
    return bool(image.tag) and str(image) == str(signed)


def parse_identity(obj: Any, where: str) -> Identity:
    if obj is None:
        return Identity()
    if not isinstance(obj, dict) or obj.get("type") not in KINDS:
        kind = obj.get("type") if isinstance(obj, dict) else obj
        raise TrustConfigError(
            f"{where}: signedIdentity type {kind!r} is not one of {', '.join(KINDS)}"
        )
    kind = obj["type"]
    fields = {
        "exactReference": {"dockerReference"},
        "exactRepository": {"dockerRepository"},
        "remapIdentity": {"prefix", "signedPrefix"},
    }.get(kind, set())
    extra = set(obj) - fields - {"type"}
    missing = fields - set(obj)
    if extra or missing:
        raise TrustConfigError(
            f"{where}: signedIdentity {kind} "
            + (f"has unknown key(s) {', '.join(sorted(extra))}" if extra else "")
            + (f"needs {', '.join(sorted(missing))}" if missing and not extra else "")
        )
    if kind == "exactReference":
        ref = parse_name(str(obj["dockerReference"]), f"{where}: dockerReference")
        if not (ref.tag or ref.digest):
            raise TrustConfigError(f"{where}: dockerReference {ref} needs a tag or a digest")
        return Identity(kind, reference=ref)
    if kind == "exactRepository":
        repo = parse_name(str(obj["dockerRepository"]), f"{where}: dockerRepository")
        return Identity(kind, repository=repo.name)
    if kind == "remapIdentity":
        return Identity(kind, prefix=str(obj["prefix"]), signed_prefix=str(obj["signedPrefix"]))
    return Identity(kind)
