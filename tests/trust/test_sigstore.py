"""Sigstore signatures with cosign keys against a real docker-registry: tcm's own round-trip,
a signature the test writes in cosign's published format (payload, ECDSA, a ``.sig`` image
pushed over plain HTTP; no tcm code), tampering, and the key-file errors."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request

import pytest

from tests.support.tools import require_modules
from tests.trust.conftest import cosign_key_file, write_policy

PASSPHRASE = b"correct horse"


@pytest.fixture
def cosign_key(tmp_path):
    require_modules("cryptography", "nacl")
    key = cosign_key_file(tmp_path / "cosign.key", PASSPHRASE)
    (tmp_path / "pass").write_bytes(PASSPHRASE + b"\n")
    return key, key.with_suffix(".pub"), tmp_path / "pass"


def sigstore_policy(path, host, pub, identity=None):
    req = {"type": "sigstoreSigned", "keyPath": str(pub)}
    if identity:
        req["signedIdentity"] = {"type": identity}
    return write_policy(path, docker={f"{host}/tcm": [req]}, default=[{"type": "reject"}])


def pull(tcm, ref, host, policy, node, ok=True):
    return tcm("pull", ref, "--insecure-host", host, "--policy", policy, "-c", node, "--all",
               ok=ok)  # fmt: skip


def put(url: str, data: bytes, content_type: str | None = None, method: str = "PUT") -> str:
    req = urllib.request.Request(url, data=data, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req) as resp:
        return str(resp.headers.get("Location", ""))


def push_blob(host: str, repo: str, data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    loc = put(f"http://{host}/v2/{repo}/blobs/uploads/", b"", method="POST")
    loc = loc if loc.startswith("http") else f"http://{host}{loc}"
    put(f"{loc}&digest={digest}", data, "application/octet-stream")
    return {"digest": digest, "size": len(data)}


def cosign_style_signature(host, repo, digest, key_path, passphrase, *, tamper=False):
    """What ``cosign sign --key`` leaves: a payload naming the repository and the digest,
    its ECDSA-SHA256 signature in the layer's annotation, an image tagged sha256-HEX.sig."""
    import nacl.secret
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    text = key_path.read_text()
    doc = json.loads(base64.b64decode("".join(text.splitlines()[1:-1])))
    secret = Scrypt(salt=base64.b64decode(doc["kdf"]["salt"]), length=32, n=32768, r=8,
                    p=1).derive(passphrase)  # fmt: skip
    der = nacl.secret.SecretBox(secret).decrypt(
        base64.b64decode(doc["ciphertext"]), base64.b64decode(doc["cipher"]["nonce"])
    )
    key = serialization.load_der_private_key(der, None)
    payload = json.dumps({
        "critical": {"identity": {"docker-reference": f"{host}/{repo}"},
                     "image": {"docker-manifest-digest": digest},
                     "type": "cosign container image signature"},
        "optional": None,
    }).encode()  # fmt: skip
    sig = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    if tamper:
        payload = payload.replace(b'"optional": null', b'"optional": {}')
    layer = push_blob(host, repo, payload)
    layer["mediaType"] = "application/vnd.dev.cosign.simplesigning.v1+json"
    layer["annotations"] = {"dev.cosignproject.cosign/signature": base64.b64encode(sig).decode()}
    config = push_blob(host, repo, b"{}")
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config, "layers": [layer]}  # fmt: skip
    tag = "sha256-" + digest[7:] + ".sig"
    put(f"http://{host}/v2/{repo}/manifests/{tag}", json.dumps(manifest).encode(),
        "application/vnd.oci.image.manifest.v1+json")  # fmt: skip


def test_tcm_signs_and_verifies_with_a_cosign_key(tcm, pushed, cosign_key, tmp_path):
    reg, layout, _ref, digest = pushed
    key, pub, passfile = cosign_key
    ref = f"docker://{reg.host}/tcm/signed:v1"
    out = tcm("push", layout, ref, "--insecure-host", reg.host,
              "--sign-by-sigstore-private-key", key,
              "--sign-passphrase-file", passfile)  # fmt: skip
    assert (
        f"sigstore signature: docker://{reg.host}/tcm/signed:sha256-{digest[7:]}.sig" in out.stderr
    )
    policy = sigstore_policy(tmp_path / "policy.json", reg.host, pub)
    got = pull(tcm, ref, reg.host, policy, tmp_path / "node")
    assert "verified: sigstoreSigned" in got.stderr and "installed 9 entries" in got.stdout
    # signing again adds nothing; the .sig image holds one signature
    tcm("push", layout, ref, "--insecure-host", reg.host,
        "--sign-by-sigstore-private-key", key, "--sign-passphrase-file", passfile)  # fmt: skip
    with urllib.request.urlopen(urllib.request.Request(
        f"http://{reg.host}/v2/tcm/signed/manifests/sha256-{digest[7:]}.sig",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )) as resp:  # fmt: skip
        assert len(json.loads(resp.read())["layers"]) == 1


def test_a_signature_in_cosigns_format_verifies_and_tampering_fails(
    tcm, pushed, cosign_key, tmp_path, proxy
):
    reg, layout, _ref, digest = pushed
    key, pub, _ = cosign_key
    tcm("push", layout, f"docker://{reg.host}/tcm/cosigned:v1", "--insecure-host", reg.host)
    cosign_style_signature(reg.host, "tcm/cosigned", digest, key, PASSPHRASE)
    ref = f"docker://{reg.host}/tcm/cosigned:v1"
    # cosign's identity names the repository, no tag: matchRepository accepts it...
    policy = sigstore_policy(tmp_path / "repo.json", reg.host, pub, "matchRepository")
    assert "installed 9 entries" in pull(tcm, ref, reg.host, policy, tmp_path / "n1").stdout
    # ...the default (matchRepoDigestOrExact) wants the tag for a pull by tag, as podman does
    strict = sigstore_policy(tmp_path / "strict.json", reg.host, pub)
    got = pull(tcm, ref, reg.host, strict, tmp_path / "n2", ok=3)
    assert "matchRepoDigestOrExact does not accept" in got.stderr
    # by digest, the repository is enough
    by_digest = f"docker://{reg.host}/tcm/cosigned@{digest}"
    assert "installed 9 entries" in pull(tcm, by_digest, reg.host, strict, tmp_path / "n3").stdout

    # a payload changed after signing
    tcm("push", layout, f"docker://{reg.host}/tcm/tampered:v1", "--insecure-host", reg.host)
    cosign_style_signature(reg.host, "tcm/tampered", digest, key, PASSPHRASE, tamper=True)
    p = proxy(reg.host, "plain")
    tampered = sigstore_policy(tmp_path / "t.json", p.host, pub, "matchRepository")
    node = tmp_path / "n4"
    got = pull(tcm, f"docker://{p.host}/tcm/tampered:v1", p.host, tampered, node, ok=3)
    assert "does not verify with the policy's key" in got.stderr
    assert not node.exists()
    layer_blobs = [x for x in p.blob_paths if "tcm/tampered/blobs" in x]
    assert len(layer_blobs) == 1  # the signature payload only, no image config or layer


def test_signing_key_errors_are_one_line(tcm, pushed, cosign_key, tmp_path):
    reg, layout, _ref, _digest = pushed
    key, pub, _ = cosign_key
    ref = f"docker://{reg.host}/tcm/k:v1"
    (tmp_path / "wrong").write_text("not it\n")
    got = tcm("push", layout, ref, "--insecure-host", reg.host,
              "--sign-by-sigstore-private-key", key, "--sign-passphrase-file",
              tmp_path / "wrong", ok=2)  # fmt: skip
    assert got.stderr.strip() == f"error: cannot decrypt {key}: wrong passphrase"
    got = tcm("push", layout, ref, "--insecure-host", reg.host,
              "--sign-by-sigstore-private-key", pub, ok=2)  # fmt: skip
    assert "is not a cosign private key" in got.stderr
    assert len(got.stderr.strip().splitlines()) == 1
    # nothing was pushed by either
    got = tcm("inspect", ref, "--insecure-host", reg.host, ok=3)
    assert "404" in got.stderr or "MANIFEST_UNKNOWN" in got.stderr
    # a policy key that is not one
    policy = sigstore_policy(tmp_path / "p.json", reg.host, key)  # the private key file
    got = pull(tcm, f"docker://{reg.host}/tcm/cache:v1", reg.host, policy, tmp_path / "n", ok=2)
    assert "is not a PEM public key" in got.stderr
