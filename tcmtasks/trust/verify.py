"""Opening an image to install it, as a node that trusts only what its policy allows: the
registries.conf endpoints in order, and policy.json's requirements checked on the manifest the
reference names, before any config or layer byte is fetched (containers/image's order: a
signature vouches for a manifest digest; the manifest's digests vouch for the rest)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import BadSignature, ImageError, RegistryError, UntrustedImage
from ..oci.layout import resolve_index
from ..oci.refs import ImageRef
from ..oci.transfer import RegistryOptions, open_source
from . import cosign, lookaside, simplesign
from .mirrors import Endpoint
from .mirrors import load as load_registries_conf
from .names import DockerName, name_of
from .policy import Policy, Requirement, find_policy, load_policy, notice_no_policy
from .simplesign import Claim

log = logging.getLogger("tcm")

MAX_ATTACHMENT = 4 << 20


@dataclass(frozen=True)
class TrustOptions:
    """Where the node's trust configuration is (None: where podman looks)."""

    policy: Path | None = None  # policy.json
    registries_d: Path | None = None  # lookaside stores of GPG signatures
    registries_conf: Path | None = None  # mirrors, blocked registries, locations


def node_policy(trust: TrustOptions) -> Policy | None:
    path = find_policy(trust.policy)
    if path is None:
        notice_no_policy()
        return None
    return load_policy(path)


def open_trusted(
    ref: ImageRef, registry: RegistryOptions | None = None, trust: TrustOptions | None = None
) -> Any:
    """A source for ``ref`` whose ``manifest()`` is refused (``UntrustedImage``) unless the
    node's policy accepts it. A ``reject`` rule, a blocked registry or a signature
    requirement on a layout (which carries no signatures) refuse before anything is read."""
    trust = trust or TrustOptions()
    registry = registry or RegistryOptions()
    policy = node_policy(trust)
    scope, reqs = policy.requirements_for(ref) if policy else ("", ())
    for req in reqs:
        if req.type == "reject":
            raise _refused(ref, policy, scope, req, "the policy rejects this image")
    if ref.transport != "docker":
        for req in reqs:
            if req.needs_signatures:
                raise _refused(
                    ref, policy, scope, req,
                    f"a signature was required, but {ref.transport}: images carry none "
                    "(pull it from a registry with its signatures)",
                )  # fmt: skip
        return open_source(ref, registry)
    endpoints = load_registries_conf(trust.registries_conf).endpoints(ref)
    return CheckedSource(ref, endpoints, registry, trust, policy, scope, reqs)


class CheckedSource:
    """``docker://`` through its endpoints (mirrors first); the first that serves the manifest
    serves every blob after it."""

    def __init__(
        self, ref: ImageRef, endpoints: list[Endpoint], registry: RegistryOptions,
        trust: TrustOptions, policy: Policy | None, scope: str, reqs: tuple[Requirement, ...],
    ):  # fmt: skip
        self.ref, self.endpoints, self.registry, self.trust = ref, endpoints, registry, trust
        self.policy, self.scope, self.reqs = policy, scope, reqs
        self.image: Any = None  # the endpoint's RegistryImage that answered
        self.endpoint: Endpoint | None = None
        self.accepted_by: list[str] = []
        self._checked: tuple[bytes, str] | None = None

    def describe(self) -> str:
        return str(self.ref)

    @property
    def served_by(self) -> str:
        """The mirror that answered ("" for the origin): the name stays the user's."""
        ep = self.endpoint
        return f"mirror {ep.ref.host}/{ep.ref.repo}" if ep and ep.mirror else ""

    def manifest(self) -> tuple[bytes, str]:
        """The image manifest, once its policy check passed; read once, so every later step
        of this pull uses the manifest that was checked even if the tag moves meanwhile."""
        if self._checked is None:
            data, mt = self._top_manifest()
            digest = self.ref.digest or "sha256:" + hashlib.sha256(data).hexdigest()
            self._check(digest)
            self._checked = resolve_index(self.image, data, mt)
        return self._checked

    def read_manifest_blob(self, desc: dict[str, Any]) -> bytes:
        return bytes(self.image.read_manifest_blob(desc))

    def open_blob(self, digest: str, size: int | None = None) -> BinaryIO:
        return self.image.open_blob(digest, size)  # type: ignore[no-any-return]

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        return bool(self.image.has_blob(digest, size))

    def _top_manifest(self) -> tuple[bytes, str]:
        tried = []
        for ep in self.endpoints:
            opts = self.registry
            if ep.insecure and ep.ref.host not in opts.insecure_hosts:
                opts = replace(opts, insecure_hosts=[*opts.insecure_hosts, ep.ref.host])
            image = open_source(ep.ref, opts)
            try:
                found = image.top_manifest()
            except ImageError as exc:
                if len(self.endpoints) == 1:
                    raise
                tried.append(f"{ep.describe()}: {exc}")
                log.info("%s did not serve %s: %s", ep.describe(), self.ref, exc)
                continue
            self.image, self.endpoint = image, ep
            if ep.mirror:
                log.info("pulling %s from mirror %s", self.ref, ep.ref.host)
            return found  # type: ignore[no-any-return]
        raise RegistryError(f"no endpoint served {self.ref}: " + "; ".join(tried))

    # -- the policy ---------------------------------------------------------------------------

    def _check(self, digest: str) -> None:
        image = name_of(self.ref)
        for req in self.reqs:
            if req.type == "insecureAcceptAnything":
                continue
            if req.type == "signedBy":
                claims, why = self._gpg_claims(req, digest)
            else:
                claims, why = self._sigstore_claims(req, digest)
            if not claims:
                raise _refused(self.ref, self.policy, self.scope, req, why)
            ok = [
                c for c in claims if c.digest == digest and req.identity.matches(image, c.identity)
            ]
            if not ok:
                c = claims[0]
                what = (
                    f"its signature is for another manifest ({c.digest[:19]}, "
                    f"this is {digest[:19]})"
                    if c.digest != digest
                    else f"its signature names {c.identity}, which {req.identity.kind} does not "
                    f"accept for {image}"
                )
                raise _refused(self.ref, self.policy, self.scope, req, what)
            self.accepted_by.append(req.describe())

    def _gpg_claims(self, req: Requirement, digest: str) -> tuple[list[Claim], str]:
        stores = lookaside.stores_for(name_of(self.ref), self.trust.registries_d)
        if stores.read is None:
            return [], (
                "a signature was required, but no lookaside store is configured for "
                f"{self.ref.host}/{self.ref.repo} in registries.d, so no signature exists"
            )
        sigs = lookaside.read_signatures(stores.read, _name(self.ref), digest)
        if not sigs:
            return [], "a signature was required, but no signature exists"
        claims, why = [], ""
        for sig in sigs:
            try:
                content, _fpr = simplesign.verify(sig, list(req.keys))
                claims.append(simplesign.parse_claim(content, simplesign.SIMPLE_TYPE))
            except BadSignature as exc:
                why = str(exc)
        return claims, why

    def _sigstore_claims(self, req: Requirement, digest: str) -> tuple[list[Claim], str]:
        keys = [(src, cosign.load_public_key(pem, src)) for src, pem in req.keys]
        found = self.image.registry.find_manifest(self.image.repo, cosign.signature_tag(digest))
        if found is None:
            return [], "a signature was required, but no sigstore signature exists"
        try:
            manifest = json.loads(found[0])
        except ValueError:
            return [], "its sigstore signature manifest is not JSON"
        claims, why = [], "its .sig image holds no signature layer"
        for layer, raw in cosign.attachments_of(manifest):
            if int(layer.get("size", 0)) > MAX_ATTACHMENT:
                continue
            with self.image.open_blob(layer["digest"], layer.get("size")) as f:
                data = f.read()
            try:
                claims.append(cosign.verify_attached(cosign.Attached(data, raw), keys))
            except BadSignature as exc:
                why = str(exc)
        return claims, why


def _name(ref: ImageRef) -> DockerName:
    return DockerName(f"{ref.host}/{ref.repo}")


def _refused(
    ref: ImageRef, policy: Policy | None, scope: str, req: Requirement, why: str
) -> UntrustedImage:
    where = f"{policy.source} {scope}" if policy else "policy"
    return UntrustedImage(f"{ref}: refused by {where}: {req.describe()}: {why}; nothing installed")
