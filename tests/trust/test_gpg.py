"""GPG simple signing, both ways with skopeo, against a real docker-registry: what one signs
the other verifies under the same policy.json and registries.d, and both refuse an unsigned
image, a signature of another manifest and one by another key; tcm then installs nothing and
fetches no layer."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.tools import require_tools
from tests.trust.conftest import write_policy, write_registries_d


@pytest.fixture
def trust_files(tmp_path, gpg_keys, pushed):
    reg = pushed[0]
    store = tmp_path / "sigstore"
    rd = write_registries_d(tmp_path / "registries.d", store, reg.host)
    requirement = {
        "type": "signedBy",
        "keyType": "GPGKeys",
        "keyPath": str(gpg_keys["trusted"].public),
    }
    policy = write_policy(
        tmp_path / "policy.json",
        docker={f"{reg.host}/tcm": [requirement]},
        default=[{"type": "reject"}],
    )
    return policy, rd, store


def skopeo_pull(ref: str, policy, rd, dest) -> subprocess.CompletedProcess:
    require_tools("skopeo")
    return subprocess.run(
        ["skopeo", "--policy", str(policy), "--registries.d", str(rd), "copy",
         "--remove-signatures", "--src-tls-verify=false", ref, f"oci:{dest}:v1"],
        capture_output=True, text=True,
    )  # fmt: skip


def tcm_pull(tcm, ref, host, policy, rd, node, ok=True):
    return tcm(
        "pull", ref, "--insecure-host", host, "--policy", policy, "--registries-d", rd,
        "-c", node, "--all", ok=ok,
    )  # fmt: skip


def test_an_image_skopeo_signed_verifies_in_tcm_pull(tcm, gpg_keys, pushed, trust_files, tmp_path):
    reg, layout, _ref, digest = pushed
    policy, rd, store = trust_files
    require_tools("skopeo")
    signed = f"docker://{reg.host}/tcm/signed:v1"
    subprocess.run(
        ["skopeo", "--registries.d", str(rd), "copy", "--dest-tls-verify=false",
         "--sign-by", gpg_keys["trusted"].fingerprint, layout, signed],
        check=True, capture_output=True, env=gpg_keys["trusted"].env(),
    )  # fmt: skip
    assert (store / f"tcm/signed@sha256={digest[7:]}" / "signature-1").is_file()
    got = tcm_pull(tcm, signed, reg.host, policy, rd, tmp_path / "node")
    assert "verified: signedBy" in got.stderr
    assert "installed 9 entries" in got.stdout
    # by digest: any signature of that repository vouches (matchRepoDigestOrExact)
    pinned = f"docker://{reg.host}/tcm/signed@{digest}"
    again = tcm_pull(tcm, pinned, reg.host, policy, rd, tmp_path / "node2")
    assert "installed 9 entries" in again.stdout


def test_an_image_tcm_signed_verifies_under_skopeo(tcm, gpg_keys, pushed, trust_files, tmp_path):
    reg, layout, _ref, digest = pushed
    policy, rd, store = trust_files
    signed = f"docker://{reg.host}/tcm/by-tcm:v1"
    out = tcm(
        "push", layout, signed, "--insecure-host", reg.host,
        "--sign-by", gpg_keys["trusted"].fingerprint, "--registries-d", rd,
        extra_env={"GNUPGHOME": str(gpg_keys["trusted"].home)},
    )  # fmt: skip
    assert f"pin it: docker://{reg.host}/tcm/by-tcm@{digest}" in out.stderr
    assert (store / f"tcm/by-tcm@sha256={digest[7:]}" / "signature-1").is_file()
    ok = skopeo_pull(signed, policy, rd, tmp_path / "skopeo-out")
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "skopeo-out" / "index.json").read_text())["manifests"]
    got = tcm_pull(tcm, signed, reg.host, policy, rd, tmp_path / "node")
    assert "installed 9 entries" in got.stdout


def test_both_refuse_unsigned_misplaced_and_foreign_signatures(
    tcm, gpg_keys, pushed, trust_files, tmp_path, proxy
):
    reg, layout, _ref, digest = pushed
    policy, rd, store = trust_files
    trusted, other = gpg_keys["trusted"], gpg_keys["other"]
    # the tcm pulls go through a recording proxy: a refusal must come before any blob GET
    p = proxy(reg.host, "plain")
    write_registries_d(rd, store, reg.host, p.host)  # the proxy's name: the same store
    policy.write_text(policy.read_text().replace(reg.host, p.host))

    # 1. unsigned
    tcm("push", layout, f"docker://{reg.host}/tcm/unsigned:v1", "--insecure-host", reg.host)
    # 2. a signature by the trusted key that vouches for another manifest, where this
    #    manifest's signatures are read
    tcm("push", layout, f"docker://{reg.host}/tcm/moved:v1", "--insecure-host", reg.host)
    claim = {
        "critical": {
            "identity": {"docker-reference": f"{p.host}/tcm/moved:v1"},
            "image": {"docker-manifest-digest": "sha256:" + "ab" * 32},
            "type": "atomic container signature",
        },
        "optional": {},
    }
    elsewhere = subprocess.run(
        ["gpg", "--batch", "--sign", "--output", "-"], input=json.dumps(claim).encode(),
        check=True, capture_output=True, env=trusted.env(),
    ).stdout  # fmt: skip
    sigdir = store / f"tcm/moved@sha256={digest[7:]}"
    sigdir.mkdir(parents=True)
    (sigdir / "signature-1").write_bytes(elsewhere)
    # 3. signed by a key the policy does not name
    tcm("push", layout, f"docker://{reg.host}/tcm/foreign:v1", "--insecure-host", reg.host,
        "--sign-by", other.fingerprint, "--registries-d", rd,
        extra_env={"GNUPGHOME": str(other.home)})  # fmt: skip

    cases = {
        "unsigned": "no signature exists",
        "moved": "its signature is for another manifest",
        "foreign": "a key the policy does not trust",
    }
    for repo, why in cases.items():
        node = tmp_path / f"node-{repo}"
        got = tcm_pull(tcm, f"docker://{p.host}/tcm/{repo}:v1", p.host, policy, rd, node, ok=3)
        assert why in got.stderr and "nothing installed" in got.stderr, got.stderr
        assert len(got.stderr.strip().splitlines()) <= 2  # the notice-free one-line error
        assert not node.exists() or not any(node.iterdir())
        assert p.blob_paths == [], f"{repo}: fetched {p.blob_paths}"
    # skopeo, under the same policy for the registry itself, refuses the same three
    direct = write_policy(
        tmp_path / "direct.json",
        docker={f"{reg.host}/tcm": [{"type": "signedBy", "keyType": "GPGKeys",
                                     "keyPath": str(trusted.public)}]},
        default=[{"type": "reject"}],
    )  # fmt: skip
    for repo in cases:
        refused = skopeo_pull(
            f"docker://{reg.host}/tcm/{repo}:v1", direct, rd, tmp_path / f"s-{repo}"
        )
        assert refused.returncode != 0 and "rejected" in refused.stderr.lower(), refused.stderr
