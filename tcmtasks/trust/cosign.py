"""Sigstore signatures with a key, as cosign writes them and containers/image reads them
(policy ``sigstoreSigned`` with ``keyPath``/``keyData``): a payload claim signed with ECDSA
(or RSA, Ed25519), stored as a layer of an OCI image tagged ``sha256-<hex>.sig`` in the signed
image's repository, the signature in the layer's ``dev.cosignproject.cosign/signature``
annotation (sigstore docs, cosign "Signature Specification").

Private keys are cosign's encrypted PEM (``ENCRYPTED SIGSTORE PRIVATE KEY``, or the older
``ENCRYPTED COSIGN PRIVATE KEY``): base64 JSON naming scrypt (N, r, p, salt) and NaCl
secretbox (nonce) over a PKCS#8 key. ``cryptography`` does the scrypt, the signatures and the
key formats; PyNaCl does the secretbox (cryptography has none): the ``sigstore`` extra.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from ..errors import BadSignature, MissingDependency, TrustConfigError
from .simplesign import Claim, claim, parse_claim

COSIGN_TYPE = "cosign container image signature"
MT_PAYLOAD = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PEM_HEADERS = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")


@dataclass(frozen=True)
class Attached:
    """One signature from a ``.sig`` image: the payload bytes and the raw signature."""

    payload: bytes
    signature: bytes


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise MissingDependency("cryptography (sigstore signatures)", "sigstore") from None
    return serialization


def payload(identity: str, digest: str) -> bytes:
    return claim(identity, digest, COSIGN_TYPE, None)


def load_private_key(pem: bytes, passphrase: bytes, where: str) -> Any:
    """The private key of a cosign key file, decrypted with ``passphrase``."""
    serialization = _crypto()
    try:
        import nacl.exceptions
        import nacl.secret
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
    except ImportError:
        raise MissingDependency("PyNaCl (cosign key files)", "sigstore") from None
    text = pem.decode(errors="replace")
    header = next((h for h in PEM_HEADERS if f"-----BEGIN {h}-----" in text), None)
    if header is None:
        raise TrustConfigError(f"{where} is not a cosign private key (no {PEM_HEADERS[0]} block)")
    try:
        body = text.split(f"-----BEGIN {header}-----", 1)[1].split("-----END", 1)[0]
        doc = json.loads(base64.b64decode("".join(body.split())))
        kdf, cipher = doc["kdf"], doc["cipher"]
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise TrustConfigError(
                f"{where}: key encrypted with {kdf['name']}/{cipher['name']}; tcm reads "
                "scrypt/nacl/secretbox (cosign's)"
            )
        params = kdf["params"]
        key = Scrypt(
            salt=base64.b64decode(kdf["salt"]), length=32, n=int(params["N"]),
            r=int(params["r"]), p=int(params["p"]),
        ).derive(passphrase)  # fmt: skip
        box = nacl.secret.SecretBox(key)
        der = box.decrypt(base64.b64decode(doc["ciphertext"]), base64.b64decode(cipher["nonce"]))
    except nacl.exceptions.CryptoError:
        raise TrustConfigError(f"cannot decrypt {where}: wrong passphrase") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise TrustConfigError(f"{where} is not a readable cosign private key ({exc})") from None
    try:
        return serialization.load_der_private_key(der, password=None)
    except ValueError as exc:
        raise TrustConfigError(f"{where} holds no usable private key ({exc})") from None


def load_public_key(pem: bytes, where: str) -> Any:
    serialization = _crypto()
    try:
        return serialization.load_pem_public_key(pem)
    except ValueError:
        raise TrustConfigError(f"{where} is not a PEM public key") from None


def sign(private_key: Any, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return bytes(private_key.sign(data, ec.ECDSA(_hash_for(private_key.curve))))
    if isinstance(private_key, rsa.RSAPrivateKey):
        return bytes(private_key.sign(data, padding.PKCS1v15(), hashes.SHA256()))
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return bytes(private_key.sign(data))
    raise TrustConfigError(f"cannot sign with a {type(private_key).__name__}")


def verify(public_key: Any, data: bytes, signature: bytes) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(_hash_for(public_key.curve)))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        else:
            raise BadSignature(f"unsupported key type {type(public_key).__name__}")
    except InvalidSignature:
        raise BadSignature("the signature does not verify with the policy's key") from None


def _hash_for(curve: Any) -> Any:
    from cryptography.hazmat.primitives import hashes

    return {384: hashes.SHA384(), 521: hashes.SHA512()}.get(curve.key_size, hashes.SHA256())


def verify_attached(sig: Attached, keys: list[tuple[str, Any]]) -> Claim:
    """The claim of ``sig`` if one of ``keys`` verifies it; else ``BadSignature``."""
    why = "no key"
    for _where, key in keys:
        try:
            verify(key, sig.payload, sig.signature)
        except BadSignature as exc:
            why = str(exc)
            continue
        return parse_claim(sig.payload, COSIGN_TYPE)
    raise BadSignature(why)


def attachments_of(manifest: dict[str, Any]) -> list[tuple[dict[str, Any], bytes]]:
    """The (layer descriptor, raw signature) pairs of a ``.sig`` image manifest."""
    found = []
    for layer in manifest.get("layers") or []:
        if layer.get("mediaType") != MT_PAYLOAD:
            continue
        b64 = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION)
        if not isinstance(b64, str):
            continue
        try:
            found.append((layer, base64.b64decode(b64, validate=True)))
        except ValueError:
            continue  # a malformed one is no signature; others may still verify
    return found


def signature_tag(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}-{hexpart}.sig"
