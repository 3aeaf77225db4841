"""Push, pull and inspect against a real docker-registry: plain, basic auth, TLS, bearer
tokens (through the test proxy), and registries that misbehave mid-transfer."""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tcmtasks.errors import AuthError, DigestMismatch, UsageError
from tcmtasks.oci.layout import OciLayout
from tcmtasks.oci.registry import Registry, RegistryImage
from tcmtasks.oci.transfer import RegistryOptions, copy_image, open_dest, open_source
from tests.oci.conftest import PASSWORD, USER
from tests.oci.test_image import build
from tests.support.tools import require_tools


@pytest.fixture
def image(cache, tmp_path):
    built, store = build(cache, tmp_path / "img")
    return built, store


def test_round_trip_keeps_the_digest(tcm, cache, tmp_path, start_registry):
    reg = start_registry()
    ref = f"docker://{reg.host}/tcm/cache:v1"
    pushed = json.loads(tcm("package", cache, ref, "--insecure-host", reg.host, "--json").stdout)
    pulled = json.loads(
        tcm(
            "push", ref, f"oci:{tmp_path / 'pulled'}:v1", "--insecure-host", reg.host, "--json"
        ).stdout
    )
    assert pulled["digest"] == pushed["digest"] and pulled["copied"] == 2
    local = json.loads(tcm("package", cache, f"oci:{tmp_path / 'local'}:v1", "--json").stdout)
    assert local["digest"] == pushed["digest"]  # same entries, same image wherever it goes
    again = json.loads(
        tcm(
            "push", f"oci:{tmp_path / 'local'}:v1", ref, "--insecure-host", reg.host, "--json"
        ).stdout
    )
    assert (again["copied"], again["skipped"]) == (0, 2) and again["seconds"] < 2
    info = json.loads(tcm("inspect", ref, "--insecure-host", reg.host, "--json").stdout)
    assert info["entry_count"] == 9 and len(info["entries"]) == 9
    require_tools("skopeo")
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out)["Digest"] == pushed["digest"]
    assert json.loads(out)["Labels"]["cache.triton.image/entry-count"] == "9"


def test_chunked_upload_and_cross_repo_mount(image, start_registry):
    built, store = image
    reg = start_registry()
    r = Registry(reg.host, insecure=True, chunk_size=16 * 1024)  # the layer goes in chunks
    copy_image(store, RegistryImage(r, "tcm/a", "v1"))
    src = RegistryImage(r, "tcm/a", "v1")
    dst = RegistryImage(r, "tcm/b", "v1")
    result = copy_image(src, dst)
    assert result.digest == built.digest
    assert r.has_blob("tcm/b", built.layer.digest)
    data, _ = dst.manifest()
    assert json.loads(data)["layers"][0]["digest"] == built.layer.digest


def test_basic_auth(tcm, cache, image, tmp_path, start_registry, monkeypatch):
    reg = start_registry("basic")
    ref = f"docker://{reg.host}/tcm/cache:v1"
    src = f"oci:{tmp_path / 'img'}:v1"
    denied = tcm("push", src, ref, "--insecure-host", reg.host, ok=3)  # registry refused
    assert "needs credentials" in denied.stderr
    wrong = tcm(
        "push",
        src,
        ref,
        "--insecure-host",
        reg.host,
        ok=3,
        extra_env={
            "TCM_REGISTRY_USER": USER, "TCM_REGISTRY_PASSWORD": "nope",
            "TCM_REGISTRY_HOST": reg.host,
        },
    )  # fmt: skip
    assert "401" in wrong.stderr and "nope" not in wrong.stderr + wrong.stdout
    unscoped = tcm(
        "push", src, ref, "--insecure-host", reg.host, ok=3,
        extra_env={"TCM_REGISTRY_USER": USER, "TCM_REGISTRY_PASSWORD": PASSWORD},
    )  # fmt: skip
    # without TCM_REGISTRY_HOST the variables go to no host: a reference could name any
    assert "needs credentials" in unscoped.stderr and "TCM_REGISTRY_HOST" in unscoped.stderr
    ok = tcm(
        "push",
        src,
        ref,
        "--insecure-host",
        reg.host,
        extra_env={
            "TCM_REGISTRY_USER": USER, "TCM_REGISTRY_PASSWORD": PASSWORD,
            "TCM_REGISTRY_HOST": reg.host,
        },
    )  # fmt: skip
    assert PASSWORD not in ok.stdout + ok.stderr
    auth = tmp_path / "auth.json"
    auth.write_text(
        json.dumps(
            {
                "auths": {
                    reg.host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
                }
            }
        )
    )
    pulled = tcm(
        "push",
        ref,
        f"oci:{tmp_path / 'pulled'}:v1",
        "--insecure-host",
        reg.host,
        "--json",
        extra_env={"REGISTRY_AUTH_FILE": str(auth)},
    )
    assert json.loads(pulled.stdout)["digest"] == image[0].digest
    docker_cfg = tmp_path / "dockercfg"
    docker_cfg.mkdir()
    (docker_cfg / "config.json").write_text(auth.read_text())
    tcm("inspect", ref, "--insecure-host", reg.host, extra_env={"DOCKER_CONFIG": str(docker_cfg)})


def test_tls_verification(tcm, image, tmp_path, start_registry):
    reg = start_registry("tls")
    ref = f"docker://{reg.host}/tcm/cache:v1"
    src = f"oci:{tmp_path / 'img'}:v1"
    refused = tcm("push", src, ref, ok=3)
    assert "TLS verification failed" in refused.stderr and "--ca-cert" in refused.stderr
    tcm("push", src, ref, "--ca-cert", reg.ca)
    tcm("push", src, ref, "--insecure-host", reg.host)  # explicitly trusted host
    assert "does not exist" in tcm("push", src, ref, "--ca-cert", tmp_path / "no.pem", ok=2).stderr


def test_bearer_token_challenge(image, start_registry, proxy, monkeypatch):
    built, store = image
    reg = start_registry()
    p = proxy(reg.host, "bearer")
    with pytest.raises(AuthError, match="token server"):
        copy_image(
            store,
            RegistryImage(Registry(p.host, insecure=True, credentials=None), "tcm/cache", "v1"),
        )
    r = Registry(p.host, insecure=True, credentials=(USER, PASSWORD))
    result = copy_image(store, RegistryImage(r, "tcm/cache", "v1"))
    assert result.digest == built.digest
    assert any("scope=repository%3Atcm%2Fcache%3Apull%2Cpush" in q for q in p.token_requests)
    pulled = OciLayout(store.path.parent / "pulled", "v1", create=True)
    assert copy_image(RegistryImage(r, "tcm/cache", "v1"), pulled).digest == built.digest


def test_corrupt_blob_leaves_no_local_image(tcm, image, tmp_path, start_registry, proxy):
    _built, store = image
    reg = start_registry()
    copy_image(store, RegistryImage(Registry(reg.host, insecure=True), "tcm/cache", "v1"))
    p = proxy(reg.host, "corrupt")
    dest = tmp_path / "pulled"
    proc = tcm(
        "push", f"docker://{p.host}/tcm/cache:v1", f"oci:{dest}:v1", "--insecure-host", p.host, ok=3
    )
    assert "does not match its digest" in proc.stderr
    assert not dest.exists()  # the layout this run created is gone
    existing = OciLayout(tmp_path / "existing", "old", create=True)
    with pytest.raises(DigestMismatch):
        copy_image(RegistryImage(Registry(p.host, insecure=True), "tcm/cache", "v1"), existing)
    assert existing.tags() == []  # no tag points at a half image
    assert not any(f.name.startswith(".blob-") for f in (existing.path / "blobs/sha256").iterdir())


def test_registry_dying_mid_push_is_a_clear_error(image, start_registry, proxy, monkeypatch):
    import tcmtasks.oci.registry as registry_mod

    monkeypatch.setattr(registry_mod, "BACKOFF", 0.01)
    built, store = image
    reg = start_registry()
    p = proxy(reg.host, "die_after", die_after=2)
    t = time.monotonic()
    with pytest.raises(registry_mod.ImageError, match="cannot reach registry"):
        copy_image(store, RegistryImage(Registry(p.host, insecure=True), "tcm/cache", "v1"))
    assert time.monotonic() - t < 30
    # nothing was tagged: the manifest goes last
    with pytest.raises(registry_mod.ImageError, match="404"):
        Registry(reg.host, insecure=True).get_manifest("tcm/cache", "v1")
    assert OciLayout(store.path, "v1").manifest()[0] == built.manifest  # source intact


def test_unreachable_registry(image):
    import tcmtasks.oci.registry as registry_mod

    registry_mod.BACKOFF = 0.01
    try:
        with pytest.raises(registry_mod.ImageError, match="cannot reach registry"):
            copy_image(image[1], RegistryImage(Registry("127.0.0.1:9", insecure=True), "x", "v"))
    finally:
        registry_mod.BACKOFF = 0.5


def test_oci_archive_and_docker_archive(tcm, image, tmp_path):
    built, store = image
    archive = tmp_path / "img.tar"
    tcm("push", f"oci:{store.path}:v1", f"oci-archive:{archive}:v1")
    info = json.loads(tcm("inspect", f"oci-archive:{archive}:v1", "--json").stdout)
    assert info["entry_count"] == 9 and len(info["entries"]) == 9
    # a docker save archive of the same image: manifest.json, config, uncompressed layer
    cfg = store.blob_path(json.loads(built.manifest)["config"]["digest"])
    import gzip

    layer_tar = gzip.decompress(store.blob_path(built.layer.digest).read_bytes())
    dsave = tmp_path / "dsave"
    dsave.mkdir()
    (dsave / "config.json").write_bytes(cfg.read_bytes())
    (dsave / "layer.tar").write_bytes(layer_tar)
    (dsave / "manifest.json").write_text(
        json.dumps([{"Config": "config.json", "RepoTags": ["tcm:v1"], "Layers": ["layer.tar"]}])
    )
    docker_archive = tmp_path / "docker.tar"
    with tarfile.open(docker_archive, "w") as tar:
        for name in ("manifest.json", "config.json", "layer.tar"):
            tar.add(dsave / name, name)
    info = json.loads(tcm("inspect", f"docker-archive:{docker_archive}", "--json").stdout)
    assert info["entry_count"] == 9 and len(info["entries"]) == 9
    tcm("push", f"docker-archive:{docker_archive}", f"oci:{tmp_path / 'from-docker'}:v1")
    assert (
        "read-only"
        in tcm("push", f"oci:{store.path}:v1", f"docker-archive:{tmp_path}/x", ok=2).stderr
    )


def test_bad_references_and_missing_tags(tcm, image):
    proc = tcm("inspect", "s3://bucket/x", ok=2)
    assert "Accepted forms" in proc.stderr
    proc = tcm("inspect", f"oci:{image[1].path}:nope", ok=3)  # usage 2, image 3
    assert "no tag 'nope'" in proc.stderr and "v1" in proc.stderr


def test_open_helpers_pick_the_transport(image, tmp_path):
    assert isinstance(open_source(f"oci:{image[1].path}:v1"), OciLayout)
    dst = open_dest("docker://127.0.0.1:1/a/b:c", RegistryOptions(insecure_hosts=["127.0.0.1:1"]))
    assert isinstance(dst, RegistryImage) and dst.registry.insecure


def test_an_expired_token_is_refreshed_mid_transfer(image, start_registry, proxy):
    built, store = image
    reg = start_registry()
    p = proxy(reg.host, "bearer_expiring")  # every token dies after 4 requests
    r = Registry(p.host, insecure=True, credentials=(USER, PASSWORD))
    result = copy_image(store, RegistryImage(r, "tcm/cache", "v1"))
    assert result.digest == built.digest
    assert p.tokens_issued >= 2  # it expired at least once, and tcm asked for a new one


def test_a_plain_http_registry_over_tls_names_the_flag(tcm, image, tmp_path, start_registry):
    reg = start_registry()
    proc = tcm("push", f"oci:{tmp_path / 'img'}:v1", f"docker://{reg.host}/tcm/cache:v1", ok=3)
    assert f"--insecure-host {reg.host}" in proc.stderr and "does not answer TLS" in proc.stderr
    assert "SSL" not in proc.stderr


HELPER = """#!/bin/sh
# a docker credential helper: the host on stdin, JSON on stdout
read host
[ "$host" = "$TCM_TEST_HOST" ] || exit 1
printf '{"ServerURL":"%s","Username":"%s","Secret":"%s"}' "$host" "$TCM_TEST_USER" "$TCM_TEST_PW"
"""


def test_credentials_from_a_credential_helper(tcm, image, tmp_path, start_registry):
    reg = start_registry("basic")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-tcmtest"
    helper.write_text(HELPER)
    helper.chmod(0o755)
    cfg = tmp_path / "docker"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({"credHelpers": {reg.host: "tcmtest"}}))
    env = {
        "DOCKER_CONFIG": str(cfg), "PATH": f"{bindir}:{os.environ['PATH']}",
        "TCM_TEST_HOST": reg.host, "TCM_TEST_USER": USER, "TCM_TEST_PW": PASSWORD,
    }  # fmt: skip
    out = tcm("push", f"oci:{tmp_path / 'img'}:v1", f"docker://{reg.host}/tcm/cache:v1",
              "--insecure-host", reg.host, "--json", extra_env=env)  # fmt: skip
    assert json.loads(out.stdout)["copied"] == 2 and PASSWORD not in out.stdout + out.stderr


def test_pipeline_destinations_are_registries_as_users_name_them():
    from tcmtasks.pipeline.recipe import Recipe
    from tcmtasks.pipeline.stages import destination_ref

    recipe = Recipe(path=Path("x.yaml"), model="m", warm={}, image_name="tcm/m")
    ref, _ = destination_ref(recipe, "docker://myhost", "v1")
    assert (ref.host, ref.repo, ref.tag) == ("myhost", "tcm/m", "v1")  # a host, not Docker Hub
    ref, _ = destination_ref(recipe, "docker://registry.example.com:5000/team/ml/", "v1")
    assert (ref.host, ref.repo) == ("registry.example.com:5000", "team/ml/tcm/m")  # org kept
    with pytest.raises(UsageError, match="destination docker://h/Bad"):
        destination_ref(recipe, "docker://h/Bad", "v1")


def _pull_through(p, tmp_path, **opts):
    from tcmtasks import ops
    from tcmtasks.oci.transfer import RegistryOptions

    return ops.pull(
        f"docker://{p.host}/tcm/cache:v1",
        ops.RestoreOptions(cache_dir=tmp_path / "node", all_targets=True),
        registry=RegistryOptions(insecure_hosts=[p.host], **opts),
    )


def test_a_connection_reset_every_few_kib_still_completes(
    image, tmp_path, start_registry, proxy, db
):
    """Each answer gets 16 KiB further before its reset: the pull goes on as long as it makes
    progress (tries count only resets in a row without a byte)."""
    _built, store = image
    reg = start_registry()
    copy_image(store, RegistryImage(Registry(reg.host, insecure=True), "tcm/cache", "v1"))
    p = proxy(reg.host, "reset_always", cut=16384)
    report = _pull_through(p, tmp_path)
    assert len(report.kept) == 9 and p.faulted >= 4  # the layer is ~78 KB
    starts = [int(r.split("=")[1].rstrip("-")) for r in p.ranges if r]
    assert starts[0] == 16384 and all(b - a == 16384 for a, b in itertools.pairwise(starts))


def test_a_connection_reset_mid_layer_resumes_from_the_last_byte(
    image, tmp_path, start_registry, proxy, db
):
    _built, store = image
    reg = start_registry()
    copy_image(store, RegistryImage(Registry(reg.host, insecure=True), "tcm/cache", "v1"))
    p = proxy(reg.host, "reset_once", cut=4096)
    report = _pull_through(p, tmp_path)
    assert len(report.kept) == 9 and p.faulted == 1
    # the layer was asked for once whole, then once from where the reset left it
    assert [r for r in p.ranges if r] == ["bytes=4096-"]


def test_a_registry_that_ignores_range_is_read_past_what_was_received(
    image, tmp_path, start_registry, proxy, db
):
    """It answers the whole blob again (200, not 206): the first 4096 bytes are skipped, the
    digest is still checked over the whole blob, and the pull completes."""
    _built, store = image
    reg = start_registry()
    copy_image(store, RegistryImage(Registry(reg.host, insecure=True), "tcm/cache", "v1"))
    p = proxy(reg.host, "reset_once", cut=4096)
    p.no_range = True
    report = _pull_through(p, tmp_path)
    assert (
        len(report.kept) == 9 and p.faulted == 1 and [r for r in p.ranges if r] == ["bytes=4096-"]
    )


def test_a_stalled_layer_is_asked_again_after_the_timeout(
    image, tmp_path, start_registry, proxy, db
):
    _built, store = image
    reg = start_registry()
    copy_image(store, RegistryImage(Registry(reg.host, insecure=True), "tcm/cache", "v1"))
    p = proxy(reg.host, "stall_once", cut=4096, stall=3)
    report = _pull_through(p, tmp_path, timeout=1)
    assert len(report.kept) == 9 and [r for r in p.ranges if r] == ["bytes=4096-"]


def test_a_connection_reset_every_time_says_so_and_keeps_nothing(
    tcm, image, tmp_path, start_registry, proxy
):
    _built, store = image
    reg = start_registry()
    copy_image(store, RegistryImage(Registry(reg.host, insecure=True), "tcm/cache", "v1"))
    p = proxy(reg.host, "reset_always", cut=0)  # every answer cut right after its headers
    node = tmp_path / "node"
    proc = tcm("pull", f"docker://{p.host}/tcm/cache:v1", "--all", "-c", node,
               "--insecure-host", p.host, ok=3)  # fmt: skip
    assert "connection reset at byte 0 of" in proc.stderr and "corrupt" not in proc.stderr
    assert p.faulted == 5  # the first request and RETRIES (4) resumptions, all cut
    assert not node.exists() or not [d for d in node.iterdir() if not d.name.startswith(".")]


@pytest.mark.parametrize("mode", ["patch_dropped_once", "patch_reply_lost_once"])
def test_a_chunk_whose_connection_drops_is_resumed_where_the_registry_is(
    image, start_registry, proxy, mode
):
    """The registry is asked how much of the upload it holds (GET, Range) and the push goes
    on from there, whether it lost the chunk or took it and only the reply was lost (sending
    the same chunk again to that session is what registries refuse)."""
    built, store = image
    reg = start_registry()
    p = proxy(reg.host, mode, die_after=2)
    copy_image(store, RegistryImage(Registry(p.host, insecure=True, chunk_size=16384),
                                    "tcm/cache", "v1"))  # fmt: skip
    assert p.faulted == 1 and p.uploads >= 3  # the layer (~78 KB) went in 16 KiB chunks
    pushed = Registry(reg.host, insecure=True).get_manifest("tcm/cache", "v1")[0]
    assert pushed == built.manifest


def test_chunks_refused_every_time_end_with_the_real_cause(image, start_registry, proxy,
                                                           monkeypatch):  # fmt: skip
    """A registry that answers (upload status, new sessions) but drops every chunk: bounded
    tries, then one message with what failed; nothing is tagged."""
    import tcmtasks.oci.registry as registry_mod

    monkeypatch.setattr(registry_mod, "BACKOFF", 0.01)
    _built, store = image
    reg = start_registry()
    p = proxy(reg.host, "patch_dropped_always")
    t = time.monotonic()
    with pytest.raises(registry_mod.RegistryError, match=r"cannot upload .* 5 times"):
        copy_image(store, RegistryImage(Registry(p.host, insecure=True, chunk_size=16384),
                                        "tcm/cache", "v1"))  # fmt: skip
    assert time.monotonic() - t < 60
    assert p.uploads == 5 * 5  # 5 sessions, each given up after 5 chunk tries in a row
    with pytest.raises(registry_mod.ImageError, match="404"):
        Registry(reg.host, insecure=True).get_manifest("tcm/cache", "v1")
