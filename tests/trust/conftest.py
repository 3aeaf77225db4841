"""Real keys and real trust files for the trust tests: GPG keys made by gpg in throw-away
homes, cosign key files written by the test in cosign's published format (scrypt + NaCl
secretbox over PKCS#8, sigstore docs "Signature Specification"), policy.json and registries.d
files as containers-policy.json(5) and containers-registries.d(5) describe them, and an
image in a real docker-registry."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.tools import require_modules, require_tools


@dataclass
class GpgKey:
    home: Path  # a GNUPGHOME holding the secret key
    fingerprint: str
    public: Path  # the exported public key

    def env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.home)}


def _make_key(name: str, out: Path) -> GpgKey:
    # a short home: gpg-agent's socket path must fit in 108 bytes
    home = Path(tempfile.mkdtemp(prefix="tcmg", dir="/tmp"))
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.com>",
         "ed25519", "sign", "never"],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-secret-keys"],
        check=True, capture_output=True, text=True, env=env,
    ).stdout  # fmt: skip
    fpr = next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:"))
    public = out / f"{name}.gpg"
    public.write_bytes(
        subprocess.run(
            ["gpg", "--batch", "--export", fpr], check=True, capture_output=True, env=env
        ).stdout
    )
    return GpgKey(home, fpr, public)


@pytest.fixture(scope="session")
def gpg_keys(tmp_path_factory):
    """Two signers: ``trusted`` (the policy's key) and ``other`` (a key nobody trusts)."""
    require_tools("gpg", "gpg-agent")
    out = tmp_path_factory.mktemp("gpg")
    keys = {name: _make_key(name, out) for name in ("trusted", "other")}
    yield keys
    for k in keys.values():
        subprocess.run(["gpgconf", "--homedir", str(k.home), "--kill", "all"], capture_output=True)
        shutil.rmtree(k.home, ignore_errors=True)


def cosign_key_file(path: Path, passphrase: bytes) -> Path:
    """An ECDSA P-256 key in cosign's encrypted key format, and its public key beside it
    (``.pub``): written from the format's description, not with tcm's code."""
    require_modules("cryptography", "nacl")
    import nacl.secret
    import nacl.utils
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt = os.urandom(32)
    secret = Scrypt(salt=salt, length=32, n=32768, r=8, p=1).derive(passphrase)
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    sealed = nacl.secret.SecretBox(secret).encrypt(der, nonce).ciphertext
    doc = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": 32768, "r": 8, "p": 1},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    body = base64.encodebytes(json.dumps(doc).encode()).decode()
    path.write_text(
        f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{body}"
        "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    )
    path.with_suffix(".pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def write_policy(path: Path, docker: dict | None = None, default: list | None = None) -> Path:
    doc: dict = {"default": default or [{"type": "insecureAcceptAnything"}]}
    if docker is not None:
        doc["transports"] = {"docker": docker}
    path.write_text(json.dumps(doc, indent=2))
    return path


def write_registries_d(directory: Path, store: Path, *hosts: str) -> Path:
    """A registries.d naming ``store`` as each host's lookaside (read and staging)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tcm-test.yaml").write_text(
        "docker:\n"
        + "".join(
            f"  {h}:\n    lookaside: file://{store}\n    lookaside-staging: file://{store}\n"
            for h in hosts
        )
    )
    return directory


@pytest.fixture
def pushed(tcm, cache, start_registry, tmp_path):
    """A tcm image of the 9-kernel cache at ``docker://HOST/tcm/cache:v1``, and its layout."""
    reg = start_registry()
    layout = f"oci:{tmp_path / 'img'}:v1"
    tcm("package", cache, layout)
    ref = f"docker://{reg.host}/tcm/cache:v1"
    digest = json.loads(tcm("push", layout, ref, "--insecure-host", reg.host, "--json").stdout)
    return reg, layout, ref, digest["digest"]
