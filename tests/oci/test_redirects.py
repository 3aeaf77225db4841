"""Credentials never follow a redirect to another host (issue: registry client redirects).

A loopback front asks for Basic auth, as a cloud registry does, and answers blob GETs with a
307 to "object storage" on another port, which records what it receives."""

from __future__ import annotations

import json

import pytest

from tcmtasks.errors import AuthError, RegistryError
from tcmtasks.oci.registry import Registry, RegistryImage
from tcmtasks.oci.transfer import copy_image
from tests.oci.conftest import PASSWORD, USER, make_ca
from tests.oci.test_image import build

CREDS = {"TCM_REGISTRY_USER": USER, "TCM_REGISTRY_PASSWORD": PASSWORD}


@pytest.fixture
def pushed(cache, tmp_path, start_registry):
    """A real registry holding the test image, and the local copy of that image."""
    built, store = build(cache, tmp_path / "img")
    reg = start_registry()
    copy_image(store, RegistryImage(Registry(reg.host, insecure=True), "tcm/cache", "v1"))
    return reg, built


def test_blob_redirect_drops_credentials_and_still_verifies(tcm, pushed, proxy, storage,
                                                           tmp_path):  # fmt: skip
    reg, built = pushed
    bucket = storage(reg.host)
    front = proxy(reg.host, "redirect", storage=bucket)
    out = tmp_path / "pulled"
    ref = f"docker://{front.host}/tcm/cache:v1"
    result = json.loads(
        tcm("push", ref, f"oci:{out}:v1", "--insecure-host", front.host, "--json",
            extra_env={**CREDS, "TCM_REGISTRY_HOST": front.host}).stdout
    )  # fmt: skip
    assert result["digest"] == built.digest  # every byte still checked against its digest
    assert bucket.seen, "the blobs came from storage, through the redirect"
    for headers in bucket.seen:
        assert not any(k.lower() in ("authorization", "cookie") for k in headers)
        assert PASSWORD not in json.dumps(headers)
    report = json.loads(
        tcm("pull", ref, "--all", "-c", tmp_path / "node", "--insecure-host", front.host,
            "--json", extra_env={**CREDS, "TCM_REGISTRY_HOST": front.host}).stdout
    )  # fmt: skip
    assert len(report["kept"]) == 9


def test_https_to_http_redirect_is_refused(pushed, proxy, storage, tmp_path):
    reg, _built = pushed
    ca, cert, key = make_ca(tmp_path)
    bucket = storage(reg.host)
    front = proxy(reg.host, "redirect", storage=bucket, tls=(cert, key))
    registry = Registry(front.host, ca_cert=ca, credentials=(USER, PASSWORD))
    image = RegistryImage(registry, "tcm/cache", "v1")
    layer = json.loads(image.manifest()[0])["layers"][0]
    with pytest.raises(RegistryError, match=r"redirected to plain HTTP.*--insecure-host"):
        image.open_blob(layer["digest"], layer["size"]).read()
    assert bucket.seen == []  # nothing was sent there at all
    trusting = Registry(front.host, ca_cert=ca, credentials=(USER, PASSWORD),
                        insecure_hosts=[bucket.host])  # fmt: skip
    data = RegistryImage(trusting, "tcm/cache", "v1").open_blob(layer["digest"], layer["size"])
    assert len(data.read()) == layer["size"]
    assert not any("Authorization" in h for h in bucket.seen)


def test_a_redirect_loop_stops_with_a_message(pushed, proxy, tmp_path):
    reg, _built = pushed
    front = proxy(reg.host, "loop")
    image = RegistryImage(Registry(front.host, insecure=True), "tcm/cache", "v1")
    layer = json.loads(image.manifest()[0])["layers"][0]
    with pytest.raises(RegistryError, match="redirected more than 5 times"):
        image.open_blob(layer["digest"], layer["size"]).read()


def test_a_token_realm_over_plain_http_is_refused(pushed, proxy, tmp_path):
    reg, _built = pushed
    ca, cert, key = make_ca(tmp_path)
    front = proxy(reg.host, "bearer", tls=(cert, key))  # https registry, realm http://.../token
    registry = Registry(front.host, ca_cert=ca, credentials=(USER, PASSWORD))
    with pytest.raises(AuthError, match="token server over plain HTTP"):
        RegistryImage(registry, "tcm/cache", "v1").manifest()
    assert front.token_requests == []  # the password never went out
    # (an insecure host may use an http realm: tests/oci/test_registry.py's bearer test)


def test_ca_cert_adds_to_the_system_cas(tmp_path):
    ca, _cert, _key = make_ca(tmp_path)
    registry = Registry("example.invalid", ca_cert=ca)
    # the private CA and the system's (certifi-less default paths) are both loaded
    assert registry._ctx.cert_store_stats()["x509_ca"] >= 2
