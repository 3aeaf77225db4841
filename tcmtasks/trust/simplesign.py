"""GPG "simple signing", the signatures skopeo ``--sign-by`` writes and podman checks
(containers-signature(5)): an OpenPGP signed message whose content is a small JSON claim that
an identity (``docker-reference``) has a manifest digest.

OpenPGP goes through the ``gpg`` binary rather than a Python binding: it is the engine
containers/image itself drives (through gpgme), so keyrings, key types and trust decisions are
the same as podman's, and it adds no dependency (python-gnupg would wrap the same binary). Every
verification runs in a throw-away GNUPGHOME holding only the policy's keys, as containers/image
does; signing uses the user's own keyring (``GNUPGHOME``), as skopeo does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadSignature, MissingDependency, TrustConfigError, UsageError
from .names import DockerName, parse_name

SIMPLE_TYPE = "atomic container signature"


@dataclass(frozen=True)
class Claim:
    """What a signature vouches for."""

    identity: DockerName
    digest: str


def gpg_binary() -> str:
    path = shutil.which("gpg")
    if path is None:
        raise MissingDependency("gpg (GnuPG)", hint="apt-get install gpg gpg-agent")
    return path


def claim(identity: str, digest: str, kind: str, optional: dict[str, Any] | None) -> bytes:
    """The signed claim, in the shape both GPG simple signing and cosign use."""
    doc = {
        "critical": {
            "identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": digest},
            "type": kind,
        },
        "optional": optional,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def payload(identity: str, digest: str) -> bytes:
    return claim(identity, digest, SIMPLE_TYPE, {"creator": "tcm", "timestamp": int(time.time())})


def parse_claim(data: bytes, kind: str) -> Claim:
    """The claim of a verified payload; ``kind`` is the ``critical.type`` it must carry.
    Unknown keys in ``critical`` are refused, as containers/image refuses them."""
    try:
        doc = json.loads(data)
        critical = doc["critical"]
        if set(critical) != {"type", "image", "identity"}:
            raise BadSignature(f"unexpected keys in the signed claim: {sorted(critical)}")
        if critical["type"] != kind:
            raise BadSignature(f"signed claim is of type {critical['type']!r}, not {kind!r}")
        digest = critical["image"]["docker-manifest-digest"]
        identity = critical["identity"]["docker-reference"]
    except BadSignature:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise BadSignature(f"the signed claim is malformed ({exc})") from None
    if not isinstance(digest, str) or not isinstance(identity, str):
        raise BadSignature("the signed claim's digest or identity is not a string")
    try:
        return Claim(parse_name(identity, "signed identity"), digest)
    except UsageError as exc:
        raise BadSignature(str(exc)) from None


def sign(data: bytes, fingerprint: str, passphrase_file: Path | None = None) -> bytes:
    """An OpenPGP signed message of ``data`` by the key ``fingerprint`` in the user's keyring."""
    cmd = [
        gpg_binary(),
        "--batch",
        "--no-tty",
        "--local-user",
        fingerprint,
        "--sign",
        "--output",
        "-",
    ]
    if passphrase_file is not None:
        cmd[1:1] = ["--pinentry-mode", "loopback", "--passphrase-file", str(passphrase_file)]
    proc = subprocess.run(cmd, input=data, capture_output=True)
    if proc.returncode != 0 or not proc.stdout:
        why = _last_line(proc.stderr)
        if "bad passphrase" in why.lower() or "no passphrase" in why.lower():
            raise TrustConfigError(f"gpg could not unlock key {fingerprint}: wrong passphrase")
        raise TrustConfigError(f"gpg could not sign with {fingerprint}: {why}")
    return proc.stdout


def verify(signature: bytes, keyrings: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """The signed content and its signer's primary-key fingerprint, if ``signature`` is one
    valid signature by a key of ``keyrings``; else ``BadSignature``."""
    with tempfile.TemporaryDirectory(prefix="tcm-gpg-") as home:
        trusted: set[str] = set()
        for where, data in keyrings:
            trusted |= _import(home, where, data)
        proc = subprocess.run(
            [gpg_binary(), "--homedir", home, "--batch", "--no-tty", "--status-fd", "2",
             "--output", "-", "--decrypt"],
            input=signature, capture_output=True,
        )  # fmt: skip
    status = [ln[9:].split() for ln in proc.stderr.decode(errors="replace").splitlines()
              if ln.startswith("[GNUPG:] ")]  # fmt: skip
    valid = [s for s in status if s and s[0] == "VALIDSIG"]
    bad = [s[0] for s in status if s and s[0] in ("BADSIG", "ERRSIG", "EXPKEYSIG", "REVKEYSIG")]
    if "ERRSIG" in bad and any(s[0] == "NO_PUBKEY" for s in status if s):
        raise BadSignature("signed by a key the policy does not trust")
    if bad or proc.returncode != 0 or len(valid) != 1:
        raise BadSignature(
            f"not a valid GPG signature ({', '.join(bad) or _last_line(proc.stderr)})"
        )
    fields = valid[0]
    primary = fields[10] if len(fields) > 10 else fields[1]
    if primary not in trusted:
        raise BadSignature(f"signed by {primary}, a key the policy does not trust")
    return proc.stdout, primary


def _import(home: str, where: str, data: bytes) -> set[str]:
    proc = subprocess.run(
        [gpg_binary(), "--homedir", home, "--batch", "--no-tty", "--status-fd", "1", "--import"],
        input=data, capture_output=True,
    )  # fmt: skip
    fprs = {
        ln.split()[3]
        for ln in proc.stdout.decode(errors="replace").splitlines()
        if ln.startswith("[GNUPG:] IMPORT_OK ")
    }
    if not fprs:
        raise TrustConfigError(f"{where} holds no GPG public key ({_last_line(proc.stderr)})")
    return fprs


def _last_line(data: bytes) -> str:
    lines = [ln for ln in data.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no output"
