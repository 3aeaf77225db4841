"""Packaging: reproducible, MCV-shaped, readable by skopeo and umoci, no packer paths."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import tarfile

import pytest

from tcmtasks import scan_root
from tcmtasks.errors import UsageError
from tcmtasks.oci.image import MANIFEST_PATH, MT_MANIFEST, package
from tcmtasks.oci.layout import OciLayout
from tcmtasks.oci.refs import parse
from tests.support.tools import require_modules, require_tools


def build(cache, out, tag="v1", **kw):
    store = OciLayout(out, tag, create=True)
    built = package(list(scan_root(cache)), store, **kw)
    store.put_manifest(built.manifest, MT_MANIFEST)
    return built, store


def layer_members(store, built):
    with tarfile.open(store.blob_path(built.layer.digest)) as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]


def test_same_entries_same_digest(cache, tmp_path, monkeypatch):
    a, _ = build(cache, tmp_path / "a")
    b, _ = build(cache, tmp_path / "b")
    assert a.digest == b.digest and a.layer.digest == b.layer.digest
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    c, store = build(cache, tmp_path / "c")
    d, _ = build(cache, tmp_path / "d")
    assert c.digest == d.digest != a.digest
    assert {m.mtime for m, _ in layer_members(store, c)} == {1700000000}
    assert c.labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"


def test_layer_layout_and_no_packer_paths(cache, tmp_path):
    built, store = build(cache, tmp_path / "img")
    members = layer_members(store, built)
    files = [m for m, _ in members if m.isfile()]
    assert files[0].name == MANIFEST_PATH  # first, so inspect reads only the head
    names = [m.name for m in files[1:]]
    assert names == sorted(names) and all(n.startswith("io.triton.cache/") for n in names)
    assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") for m, _ in members)
    assert {m.mode for m in files} == {0o644}
    for m, data in members:
        if m.isfile() and "/__grp__" in m.name:
            assert str(cache).encode() not in data
            children = json.loads(data)["child_paths"]
            assert all(k == v for k, v in children.items())
    table = json.loads(dict((m.name, d) for m, d in members)[MANIFEST_PATH])["triton"]
    assert len(table) == 9 and {r["backend"] for r in table} == {"cuda", "hip"}
    assert all(
        {"hash", "backend", "arch", "warp_size", "num_stages", "num_warps"} <= r.keys()
        for r in table
    )
    with gzip.open(store.blob_path(built.layer.digest)) as f:
        f.read(10)  # gzip, as the media type says
    assert built.layer.media_type.endswith("tar+gzip")


def test_mount_path_groups(cache, tmp_path):
    built, store = build(cache, tmp_path / "img", mount_path="/mnt/triton")
    for m, data in layer_members(store, built):
        if m.isfile() and "/__grp__" in m.name:
            key = m.name.split("/")[1]
            assert all(
                p == f"/mnt/triton/{key}/{c}" for c, p in json.loads(data)["child_paths"].items()
            )
    with pytest.raises(UsageError, match="absolute"):
        build(cache, tmp_path / "img2", mount_path="relative/path")


def test_labels_mirror_mcv(cache, tmp_path):
    built, _ = build(cache, tmp_path / "img")
    labels = built.labels
    assert labels["cache.triton.image/variant"] == "multi"
    assert labels["cache.triton.image/entry-count"] == "9"
    assert int(labels["cache.triton.image/cache-size-bytes"]) == sum(
        e.size for e in scan_root(cache)
    )
    summary = json.loads(labels["cache.triton.image/summary"])
    assert {(t["backend"], t["arch"], t["warp_size"]) for t in summary["targets"]} == {
        ("cuda", "80", 32),
        ("cuda", "90", 32),
        ("hip", "gfx942", 64),
    }
    assert all(len(v) < 4096 for v in labels.values())  # containerd's label cap
    manifest = json.loads(built.manifest)
    assert manifest["annotations"] == labels
    config = json.loads(built.config)
    assert config["config"]["Labels"] == labels
    assert config["rootfs"]["diff_ids"] == [built.diff_id]


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_other_compressions_are_valid_images(cache, tmp_path, compression):
    if compression == "zstd":
        require_modules("zstandard")
    built, _store = build(cache, tmp_path / "img", compression=compression)
    assert built.layer.media_type.endswith({"none": ".tar", "zstd": "+zstd"}[compression])
    require_tools("skopeo")
    out = subprocess.run(
        ["skopeo", "inspect", f"oci:{tmp_path / 'img'}:v1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out)["Labels"]["cache.triton.image/entry-count"] == "9"


def test_skopeo_and_umoci_read_our_layout(cache, tmp_path):
    require_tools("skopeo", "umoci")
    built, _ = build(cache, tmp_path / "img")
    info = json.loads(
        subprocess.run(
            ["skopeo", "inspect", f"oci:{tmp_path / 'img'}:v1"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info["Digest"] == built.digest
    assert info["Labels"]["cache.triton.image/variant"] == "multi"
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci:{tmp_path / 'img'}:v1", f"oci:{tmp_path / 'copy'}:v1"],
        check=True,
    )
    again = json.loads(
        subprocess.run(
            ["skopeo", "inspect", f"oci:{tmp_path / 'copy'}:v1"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert again["Digest"] == built.digest  # skopeo keeps our digests
    tags = subprocess.run(
        ["umoci", "ls", "--layout", str(tmp_path / "img")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tags == ["v1"]
    subprocess.run(
        ["umoci", "unpack", "--image", f"{tmp_path / 'img'}:v1", str(tmp_path / "bundle")],
        check=True,
        capture_output=True,
    )
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (rootfs / MANIFEST_PATH).is_file()
    assert len(list((rootfs / "io.triton.cache").iterdir())) == 9


def test_nothing_to_package_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="nothing to package"):
        build(tmp_path / "empty", tmp_path / "img")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("oci:/tmp/x:v1", ("oci", "/tmp/x", "v1")),
        ("oci:/tmp/x", ("oci", "/tmp/x", "latest")),
        ("oci:relative/dir:tag-1.2", ("oci", "relative/dir", "tag-1.2")),
        ("oci-archive:/tmp/a.tar:v2", ("oci-archive", "/tmp/a.tar", "v2")),
        ("docker-archive:/tmp/d.tar", ("docker-archive", "/tmp/d.tar", "latest")),
    ],
)
def test_local_refs(text, want):
    r = parse(text)
    assert (r.transport, str(r.path), r.tag) == want


def test_registry_refs():
    r = parse("docker://127.0.0.1:5000/tcm/opt-125m:cuda-90")
    assert (r.host, r.repo, r.tag) == ("127.0.0.1:5000", "tcm/opt-125m", "cuda-90")
    r = parse("docker://ghcr.io/org/cache@sha256:" + "a" * 64)
    assert r.digest == "sha256:" + "a" * 64 and r.repo == "org/cache"
    assert parse("docker://busybox").repo == "library/busybox"
    for bad in (
        "docker://host/Upper:x",
        "docker://host/repo:v1+cuda",
        "ftp://x",
        "oci:",
        "docker://registry.example.com",
        "docker://host/r@sha256:zz",
    ):
        with pytest.raises(UsageError, match="Accepted forms"):
            parse(bad)


def test_a_file_vanishing_mid_package_is_a_clear_error_and_leaves_nothing(cache, tmp_path):
    from tcmtasks.errors import CacheError

    entries = list(scan_root(cache))
    next(entries[5].path.glob("*.llir")).unlink()  # gone after the scan, before the read
    store = OciLayout(tmp_path / "img", "v1", create=True)
    with pytest.raises(CacheError, match="run tcm index"):
        package(entries, store)
    assert list((tmp_path / "img" / "blobs" / "sha256").iterdir()) == []
    assert store.tags() == []


def test_layout_files_are_readable_by_others(cache, tmp_path):
    """mkstemp makes 0600 files: blobs must get the usual mode, or another user's podman or
    skopeo cannot read a layout tcm wrote."""
    old = os.umask(0o022)
    try:
        build(cache, tmp_path / "img")
    finally:
        os.umask(old)
    blobs = list((tmp_path / "img" / "blobs" / "sha256").iterdir())
    assert len(blobs) == 3  # layer, config, manifest
    assert {b.stat().st_mode & 0o777 for b in blobs} == {0o644}


def test_the_index_path_builds_the_scans_layer(cache, tmp_path):
    """``tcm package`` reads entries from the index with only the manifest's metadata fields
    picked by SQLite; its layer must be the one built from a full scan, byte for byte."""
    from tcmtasks import ops

    scanned, _ = build(cache, tmp_path / "scanned")
    via_index = ops.package(cache, f"oci:{tmp_path / 'indexed'}:v1", db=tmp_path / "i.db")
    assert len(via_index.entries) == 9
    assert via_index.digest == scanned.digest
