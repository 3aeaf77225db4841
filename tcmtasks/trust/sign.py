"""Signing what tcm pushes, so nodes whose policy requires it will install it: GPG simple
signing into the lookaside staging store (as ``skopeo copy --sign-by``), or a sigstore
signature with a cosign key, attached in the registry as ``sha256-<hex>.sig`` (as
``cosign sign --key``). The keys are checked before anything is pushed."""

from __future__ import annotations

import base64
import getpass
import hashlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadSignature, TrustConfigError, UsageError
from ..oci.image import MT_CONFIG, MT_MANIFEST
from ..oci.refs import ImageRef
from ..oci.transfer import RegistryOptions, open_dest
from . import cosign, lookaside, simplesign
from .names import DockerName

EPOCH = "0001-01-01T00:00:00Z"  # cosign's own timestamps in a signature image


@dataclass(frozen=True)
class SignOptions:
    gpg_key: str | None = None  # --sign-by FINGERPRINT (the user's GNUPGHOME)
    sigstore_key: Path | None = None  # --sign-by-sigstore-private-key (cosign's key file)
    passphrase_file: Path | None = None  # for either key
    registries_d: Path | None = None  # where the lookaside staging store is named

    def __bool__(self) -> bool:
        return bool(self.gpg_key or self.sigstore_key)


@dataclass
class Signer:
    """Keys loaded and stores found: made before the push, used after it."""

    options: SignOptions
    dest: ImageRef
    private_key: Any = None
    store: str | None = None

    def sign(self, digest: str, registry: RegistryOptions | None = None) -> list[str]:
        """Sign manifest ``digest`` of the destination; what was written, one line each."""
        identity = f"{self.dest.host}/{self.dest.repo}:{self.dest.tag}"
        done = []
        if self.options.gpg_key:
            assert self.store is not None
            sig = simplesign.sign(
                simplesign.payload(identity, digest),
                self.options.gpg_key,
                self.options.passphrase_file,
            )
            path = lookaside.write_signature(
                self.store, DockerName(f"{self.dest.host}/{self.dest.repo}"), digest, sig
            )
            done.append(f"GPG signature by {self.options.gpg_key}: {path}")
        if self.private_key is not None:
            payload = cosign.payload(identity, digest)
            tag = attach(self.dest, digest, payload, self.private_key, registry)
            done.append(f"sigstore signature: docker://{self.dest.host}/{self.dest.repo}:{tag}")
        return done


def prepare(options: SignOptions, dest: ImageRef) -> Signer | None:
    """Check the keys and stores before pushing: a wrong passphrase or a missing store must
    not leave an unsigned image behind."""
    if not options:
        return None
    if dest.transport != "docker":
        raise UsageError(
            "signatures are stored beside a registry's images: sign when pushing to "
            "docker://HOST/REPO:TAG"
        )
    signer = Signer(options, dest)
    if options.gpg_key:
        _check_secret_key(options.gpg_key)
        stores = lookaside.stores_for(DockerName(f"{dest.host}/{dest.repo}"), options.registries_d)
        if stores.write is None:
            raise TrustConfigError(
                f"no lookaside store for {dest.host}/{dest.repo}: name one in registries.d "
                "(docker: {HOST: {lookaside-staging: file:///DIR}}) or pass --registries-d DIR"
            )
        signer.store = stores.write
    if options.sigstore_key:
        where = str(options.sigstore_key)
        try:
            pem = options.sigstore_key.read_bytes()
        except OSError as exc:
            raise TrustConfigError(f"cannot read key {where}: {exc.strerror}") from None
        signer.private_key = cosign.load_private_key(pem, _passphrase(options, where), where)
    return signer


def _passphrase(options: SignOptions, where: str) -> bytes:
    if options.passphrase_file is not None:
        try:
            text = options.passphrase_file.read_bytes()
        except OSError as exc:
            raise TrustConfigError(
                f"cannot read passphrase file {options.passphrase_file}: {exc.strerror}"
            ) from None
        return text.split(b"\n", 1)[0]  # its first line, as skopeo reads it
    if sys.stdin.isatty():
        return getpass.getpass(f"passphrase for {where}: ").encode()
    return b""


def _check_secret_key(fingerprint: str) -> None:
    proc = subprocess.run(
        [simplesign.gpg_binary(), "--batch", "--no-tty", "--list-secret-keys", fingerprint],
        capture_output=True,
    )
    if proc.returncode != 0:
        raise TrustConfigError(
            f"no GPG secret key {fingerprint} in this keyring (GNUPGHOME): import it or "
            "name another with --sign-by"
        )


def attach(
    dest: ImageRef, digest: str, payload: bytes, private_key: Any,
    registry: RegistryOptions | None = None,
) -> str:  # fmt: skip
    """Add a signature of ``payload`` to the ``sha256-<hex>.sig`` image of ``digest`` (made
    if missing). ECDSA signatures differ each time: a layer of the same payload that this
    key's public half verifies already stands for it, and nothing is added."""
    tag = cosign.signature_tag(digest)
    target = open_dest(ImageRef("docker", host=dest.host, repo=dest.repo, tag=tag), registry)
    found = target.registry.find_manifest(dest.repo, tag)
    layers = list(json.loads(found[0]).get("layers") or []) if found else []
    payload_digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    for old, raw in cosign.attachments_of({"layers": layers}):
        if old.get("digest") == payload_digest:
            try:
                cosign.verify(private_key.public_key(), payload, raw)
                return tag
            except BadSignature:
                continue
    layer = {
        "mediaType": cosign.MT_PAYLOAD,
        "size": len(payload),
        "digest": payload_digest,
        "annotations": {
            cosign.SIGNATURE_ANNOTATION: base64.b64encode(
                cosign.sign(private_key, payload)
            ).decode()
        },
    }
    layers.append(layer)
    config = json.dumps(
        {
            "architecture": "", "config": {}, "created": EPOCH,
            "history": [{"created": EPOCH} for _ in layers], "os": "",
            "rootfs": {"type": "layers", "diff_ids": [lay["digest"] for lay in layers]},
        },
        sort_keys=True, separators=(",", ":"),
    ).encode()  # fmt: skip
    config_desc = {
        "mediaType": MT_CONFIG,
        "size": len(config),
        "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
    }
    for desc, data in ((layer, payload), (config_desc, config)):
        if not target.has_blob(desc["digest"]):
            target.put_blob(desc, lambda d=data: io.BytesIO(d))
    manifest = {
        "schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config_desc, "layers": layers,
    }  # fmt: skip
    target.put_manifest(json.dumps(manifest, separators=(",", ":")).encode(), MT_MANIFEST)
    return tag
