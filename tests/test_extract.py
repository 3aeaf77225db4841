"""Restoring images: preflight, selection, hostile layers, interruption, and Triton hitting
what was installed."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile

import pytest

from tcmtasks import scan_root
from tcmtasks.errors import DigestMismatch, HostileImage, ImageError
from tcmtasks.extract import extract, purge_stale_staging, why_skip
from tcmtasks.oci.image import MT_LAYER, MT_MANIFEST, canonical, package
from tcmtasks.oci.layout import OciLayout
from tcmtasks.producer import Producer, detect, libdir_of, mismatches
from tcmtasks.targets import Target, gfx_name, host_targets
from tests.conftest import REPO, compile_kernels, lookups
from tests.oci.test_image import build, layer_members

ALL = [Target.parse(t) for t in ("cuda:80", "cuda:90", "hip:gfx942")]
HOST = Producer(triton_version="3.6.0", python="cp311")


def snapshot(root):
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = (
            hashlib.sha256(p.read_bytes()).hexdigest() if (p.is_file()) else "dir"
        )
    return out


@pytest.fixture
def image(cache, tmp_path):
    return build(cache, tmp_path / "img")


def test_registry_round_trip_then_triton_hits(tcm, cache, tmp_path, start_registry):
    reg = start_registry()
    ref = f"docker://{reg.host}/tcm/cache:v1"
    tcm("package", cache, ref, "--insecure-host", reg.host)
    dest = tmp_path / "node" / "triton-cache"
    report = json.loads(
        tcm(
            "pull",
            ref,
            "-c",
            dest,
            "--insecure-host",
            reg.host,
            "--target",
            "cuda:80",
            "--target",
            "cuda:90",
            "--target",
            "hip:gfx942",
            "--json",
        ).stdout
    )
    assert len(report["kept"]) == 9 and report["skipped"] == []
    assert {e.lookup for e in scan_root(dest)} == {"hit"}
    for grp in dest.glob("*/__grp__*.json"):
        assert all(
            p.startswith(str(dest) + "/")
            for p in json.loads(grp.read_text())["child_paths"].values()
        )
    events = tmp_path / "events.log"
    compile_kernels(dest, events=events)
    assert lookups(events) == {"hit": 9, "miss": 0, "store": 0}
    rows = json.loads(tcm("list", "-c", dest, "--json").stdout)  # indexed on arrival
    assert len(rows) == 9


def test_select_by_target(image, tmp_path):
    _, store = image
    dest = tmp_path / "c"
    report = extract(store, dest, targets=[Target.parse("cuda:90")], host=HOST)
    assert len(report.kept) == 3 and {k["target"] for k in report.kept} == {"cuda:90"}
    assert len(report.skipped) == 6
    assert all("not one of cuda:90" in s["reason"] for s in report.skipped)
    report = extract(store, dest, targets=[Target.parse("rocm:gfx942")], host=HOST)
    assert {k["target"] for k in report.kept} == {"hip:gfx942"}
    assert len(list(scan_root(dest))) == 6


def test_preflight_stops_before_the_layer(image, tmp_path):
    _, store = image
    opened = []

    class Counting(OciLayout):
        def open_blob(self, digest, size=None):
            opened.append(digest)
            return super().open_blob(digest, size)

    src = Counting(store.path, "v1")
    layer = json.loads(src.manifest()[0])["layers"][0]["digest"]
    with pytest.raises(
        ImageError, match="holds kernels for cuda:80, cuda:90, hip:gfx942; this host needs cuda:75"
    ):
        extract(src, tmp_path / "c", targets=[Target.parse("cuda:75")], host=HOST)
    assert layer not in opened and not (tmp_path / "c").exists()
    with pytest.raises(ImageError, match="no GPU found"):
        extract(src, tmp_path / "c", targets=[], host=HOST)


def test_producer_mismatch_warns_or_refuses(cache, tmp_path):
    store = OciLayout(tmp_path / "img", "v1", create=True)
    built = package(
        list(scan_root(cache)),
        store,
        producer={"triton_version": "3.6.0", "python": "cp312", "ptxas": "12.8.93"},
    )
    store.put_manifest(built.manifest, MT_MANIFEST)
    report = extract(store, tmp_path / "c", targets=None, host=HOST, dry_run=True)
    assert report.producer_warnings == ["Python ABI: image cp312, host cp311"]
    with pytest.raises(ImageError, match="drop --strict"):
        extract(store, tmp_path / "c", targets=None, host=HOST, strict=True)


def test_entries_keyed_with_tritons_or_torchs_ptxas_are_both_kept() -> None:
    """A torch workload compiles with the ptxas its torch ships, a plain Triton one with
    Triton's (producer.use_workload_ptxas): an entry keyed with either can hit on the host."""
    t = Target.parse("cuda:90")
    host = Producer(triton_version="3.6.0", ptxas="12.8.93", torch_ptxas="13.0.88")
    assert why_skip(t, "3.6.0", None, host, {"ptxas": "13.0.88"}) is None
    assert why_skip(t, "3.6.0", None, host, {"ptxas": "12.8.93"}) is None
    why = why_skip(t, "3.6.0", None, host, {"ptxas": "12.4.131"})
    assert why and "ptxas 12.4.131" in why and "12.8.93 or 13.0.88" in why
    plain = Producer(triton_version="3.6.0", ptxas="12.8.93")
    assert "13.0.88" in (why_skip(t, "3.6.0", None, plain, {"ptxas": "13.0.88"}) or "")
    image = Producer(ptxas="13.0.88")
    assert mismatches(image, host) == []
    assert mismatches(image, plain) == ["ptxas: image 13.0.88, host 12.8.93"]


def test_hip_entries_hit_only_a_triton_at_their_path(image, tmp_path):
    """HIP keys hold the path Triton is imported from (its AMD backend hashes the absolute
    paths of its bitcode libraries; CUDA's hashes their content). The very same Triton reached
    through a symlink computes other keys for every HIP kernel and the same for every CUDA one.
    A restore for such a runtime skips the HIP entries, and Triton's own lookups show nothing
    that could hit was left out: forced in, they miss all the same."""
    _, store = image
    here = detect(with_key=False)
    assert here.triton_dir
    site = tmp_path / "site"
    site.mkdir()
    (site / "triton").symlink_to(here.triton_dir)
    assert here.hip_paths_in_key is True  # Triton 3.6.0's own answer (its HIPOptions.hash)
    elsewhere = Producer(
        triton_version=here.triton_version, python=here.python, triton_dir=str(site / "triton"),
        hip_paths_in_key=True,
    )  # fmt: skip
    kept, forced = tmp_path / "kept", tmp_path / "forced"
    report = extract(store, kept, targets=None, host=elsewhere)
    assert len(report.kept) == 6 and {s["target"] for s in report.skipped} == {"hip:gfx942"}
    assert len(report.skipped) == 3
    assert all("HIP keys hold that path" in s["reason"] for s in report.skipped)
    assert len(extract(store, forced, targets=None, host=elsewhere, force=True).kept) == 9
    for d in (forced, kept):
        events = tmp_path / f"{d.name}.log"
        compile_kernels(d, events=events, first=site)
        assert lookups(events) == {"hit": 6, "miss": 3, "store": 3}, d.name
    home = extract(store, tmp_path / "home", targets=None, host=here)
    assert len(home.kept) == 9  # at its own path every entry stays (and hits: the round trip)


def test_hip_entries_stay_for_a_triton_that_hashes_the_libraries_contents(tmp_path, monkeypatch):
    """Triton 3.9.0 hashes its bitcode libraries' contents: the same Triton reached through
    another path computes the same HIP keys. Asked through --python, the workload's Triton
    says so itself; the restore keeps all 9 entries and that Triton's lookups hit all 9 (a
    table by version would have skipped the 3 HIP ones, as tcm did before)."""
    from tcmtasks.runtime import probe_python
    from tests.support.tools import require_triton39_python

    python = require_triton39_python()
    made = tmp_path / "made"
    compile_kernels(made, python=python)
    store = build(made, tmp_path / "img")[1]
    top = subprocess.run(
        [python, "-c", "import triton, os; print(os.path.dirname(triton.__file__))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    site = tmp_path / "site"
    site.mkdir()
    (site / "triton").symlink_to(top)
    monkeypatch.setenv("PYTHONPATH", str(site))  # the workload imports it from there
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    workload = probe_python(python)
    assert workload.triton_version == "3.9.0" and workload.hip_paths_in_key is False
    assert workload.triton_dir == str(site / "triton")
    kept = tmp_path / "kept"
    report = extract(store, kept, targets=None, host=workload)
    assert len(report.kept) == 9 and not report.skipped
    events = tmp_path / "events.log"
    compile_kernels(kept, events=events, first=site, python=python)
    assert lookups(events) == {"hit": 9, "miss": 0, "store": 0}


def test_hip_path_check_on_images_without_the_field(cache, tmp_path, monkeypatch):
    """Images from before the manifest carried ``hip_libdir`` (and MCV's): the entry's own
    metadata, read once staged, says where its Triton was."""
    import tcmtasks.oci.image as image_mod

    monkeypatch.setattr(image_mod, "libdir_of", lambda meta: None)
    built, store = build(cache, tmp_path / "img")
    members = {m.name: data for m, data in layer_members(store, built)}
    rows = json.loads(members["io.triton.manifest/manifest.json"])["triton"]
    assert not any("hip_libdir" in r for r in rows)
    elsewhere = Producer(triton_dir=str(tmp_path / "elsewhere" / "triton"))
    report = extract(store, tmp_path / "c", targets=None, host=elsewhere)
    assert {s["target"] for s in report.skipped} == {"hip:gfx942"} and len(report.kept) == 6


def test_hip_libdir_from_metadata_and_the_verdict() -> None:
    hip, cuda = Target.parse("hip:gfx942"), Target.parse("cuda:90")
    lib = "/venv/lib/python3.12/site-packages/triton/backends/amd/lib"
    meta = {"extern_libs": [["ocml", f"{lib}/ocml.bc"], ["ockl", f"{lib}/ockl.bc"]]}
    assert libdir_of(meta) == lib
    assert libdir_of({"extern_libs": [["a", "/x/a.bc"], ["b", "/y/b.bc"]]}) is None
    assert libdir_of({"extern_libs": "junk"}) is None and libdir_of(None) is None
    host = Producer(triton_dir="/venv/lib/python3.12/site-packages/triton")
    other = Producer(triton_dir="/opt/conda/lib/python3.12/site-packages/triton")
    assert why_skip(hip, None, None, host, {"hip_libdir": lib}) is None
    why = why_skip(hip, None, None, other, {"hip_libdir": lib})
    assert why and f"{lib}," in why and "/opt/conda/lib/python3.12/site-packages/triton/" in why
    assert why_skip(cuda, None, None, other, {"hip_libdir": lib}) is None  # CUDA: content
    assert why_skip(hip, None, None, Producer(), {"hip_libdir": lib}) is None  # unknown host
    contents = Producer(triton_dir=other.triton_dir, hip_paths_in_key=False)  # Triton 3.9.0
    assert why_skip(hip, None, None, contents, {"hip_libdir": lib}) is None
    assert why_skip(hip, None, None, other, {"hip_libdir": lib}, force=True) is None


def test_entries_of_another_triton_version_are_skipped(image, tmp_path):
    _, store = image
    report = extract(store, tmp_path / "c", targets=None, host=Producer(triton_version="3.9.0"))
    assert report.kept == [] and len(report.skipped) == 9
    assert all("built by Triton 3.6.0" in s["reason"] for s in report.skipped)


def test_existing_entries_kept_unless_overwrite(image, tmp_path):
    _, store = image
    dest = tmp_path / "c"
    extract(store, dest, targets=None, host=HOST)
    victim = sorted(e.path for e in scan_root(dest))[0]
    marker = victim / "local-note.txt"
    marker.write_text("mine")
    report = extract(store, dest, targets=None, host=HOST)
    assert report.kept == [] and marker.exists()
    report = extract(store, dest, targets=None, host=HOST, overwrite=True)
    assert len(report.kept) == 9 and not marker.exists()
    trash = dest / ".tcm-trash"  # swapped in place (or through the trash): nothing left over
    assert not trash.exists() or not any(trash.iterdir())
    assert not list(dest.glob(".tcm-staging-*"))


def test_an_empty_dir_left_by_a_triton_miss_does_not_block(image, tmp_path):
    from tcmtasks.oci.inspect import read_entry_manifest

    _, store = image
    dest = tmp_path / "c"
    dest.mkdir()
    rows = read_entry_manifest(store, json.loads(store.manifest()[0]))
    (dest / rows[0]["key"]).mkdir()  # Triton makes the key dir on a lookup, even a miss
    report = extract(store, dest, targets=None, host=HOST)
    assert len(report.kept) == 9
    assert {e.lookup for e in scan_root(dest)} == {"hit"}


def hostile_image(tmp_path, members):
    """An OCI layout whose single layer holds the given (TarInfo, bytes) members."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for ti, data in members:
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    layer = gzip.compress(raw.getvalue(), mtime=0)
    store = OciLayout(tmp_path / "hostile", "v1", create=True)
    blob = store.add_blob_bytes(layer, MT_LAYER["gzip"])
    config = store.add_blob_bytes(
        canonical({"config": {"Labels": {}}}), "application/vnd.oci.image.config.v1+json"
    )
    store.put_manifest(
        canonical(
            {
                "schemaVersion": 2,
                "mediaType": MT_MANIFEST,
                "config": config.descriptor(),
                "layers": [blob.descriptor()],
            }
        ),
        MT_MANIFEST,
    )
    return store


def member(name, data=b"x", kind=tarfile.REGTYPE, link=""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = kind, link
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    return ti, data if kind == tarfile.REGTYPE else None


KEY = "A" * 52


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([member("../evil")], "escapes the cache"),
        ([member("/etc/passwd")], "escapes the cache"),
        ([member(f"io.triton.cache/{KEY}/../../x")], "escapes the cache"),
        (
            [member(f"io.triton.cache/{KEY}/k.json", kind=tarfile.SYMTYPE, link="/etc/passwd")],
            "a symlink",
        ),
        (
            [member(f"io.triton.cache/{KEY}/k.json", kind=tarfile.LNKTYPE, link="/etc/passwd")],
            "a hard link",
        ),
        ([member(f"io.triton.cache/{KEY}/dev", kind=tarfile.CHRTYPE)], "a device"),
        ([member("etc/cron.d/x")], "outside io.triton.cache/"),
        ([member(f"io.triton.cache/{KEY}/sub/deeper")], "is not io.triton.cache/<KEY>/<FILE>"),
        (
            [member(f"io.triton.cache/{KEY}/k.json"), member(f"io.triton.cache/{KEY}/k.json")],
            "twice",
        ),
    ],
)
def test_hostile_layers_install_nothing(image, tmp_path, members, message):
    _, good = image
    dest = tmp_path / "c"
    extract(good, dest, targets=[Target.parse("cuda:90")], host=HOST)
    before = snapshot(dest)
    bad = hostile_image(tmp_path, members)
    with pytest.raises(HostileImage, match=message):
        extract(bad, dest, targets=None, host=HOST)
    after = snapshot(dest)
    assert {k: v for k, v in after.items() if not k.startswith(".tcm")} == {
        k: v for k, v in before.items() if not k.startswith(".tcm")
    }
    assert not list(dest.glob(".tcm-staging-*"))
    assert not (tmp_path / "evil").exists() and not (tmp_path / "x").exists()


def test_members_tar_cannot_take_as_they_are_get_fresh_headers(image, tmp_path):
    """The layer's own headers go to tar only when plain (0644, no PAX block): a set-uid
    mode or a PAX header (tar would read it, tcm's copy would lose it) still gives the same
    files, mode 0644, and every entry hits."""
    built, store = image
    members = layer_members(store, built)
    n = 0
    for ti, _data in members:
        if ti.isfile() and ti.name.startswith("io.triton.cache/"):
            n += 1
            if n % 2:
                ti.mode = 0o6755
            else:
                ti.pax_headers = {"comment": "tcm never writes this"}
    odd = hostile_image(tmp_path, members)
    plain, other = tmp_path / "plain", tmp_path / "other"
    extract(store, plain, targets=None, host=HOST)
    report = extract(odd, other, targets=None, host=HOST)
    assert len(report.kept) == 9 and n > 9
    assert {e.key: e.lookup for e in scan_root(other)} == {e.key: "hit" for e in scan_root(plain)}
    mode = 0o644 & ~_umask()
    for f in other.rglob("*"):
        if f.is_file() and ".tcm" not in str(f):
            assert f.stat().st_mode & 0o7777 == mode, f
            assert f.read_bytes() == (plain / f.relative_to(other)).read_bytes().replace(
                str(plain).encode(), str(other).encode()
            ), f


def test_names_with_a_leading_dot_slash_install_the_same(image, tmp_path):
    """``./io.triton.cache/KEY/FILE`` (as some tars write names) is the same file: tcm strips
    the ``./``; tar would not, so such a member never goes to tar as the layer holds it."""
    built, store = image
    members = layer_members(store, built)
    for ti, _data in members:
        ti.name = "./" + ti.name
    dotted = hostile_image(tmp_path, members)
    plain, other = tmp_path / "plain", tmp_path / "other"
    extract(store, plain, targets=None, host=HOST)
    report = extract(dotted, other, targets=None, host=HOST)
    assert len(report.kept) == 9
    assert {e.key: e.lookup for e in scan_root(other)} == {e.key: "hit" for e in scan_root(plain)}
    assert not (other / "io.triton.cache").exists()


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def test_size_cap(image, tmp_path):
    _, store = image
    with pytest.raises(HostileImage, match="more than 1000 bytes"):
        extract(store, tmp_path / "c", targets=None, host=HOST, max_total=1000)
    assert list(scan_root(tmp_path / "c")) == []


def test_corrupt_layer_installs_nothing(image, tmp_path):
    built, store = image
    blob = store.blob_path(built.layer.digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises((ImageError, DigestMismatch)):
        extract(store, tmp_path / "c", targets=None, host=HOST)
    # (the damage may be found before the first member: then not even the dir is made)
    assert not (tmp_path / "c").exists() or list(scan_root(tmp_path / "c")) == []
    assert not list((tmp_path / "c").glob(".tcm-staging-*"))


def test_killed_extraction_leaves_the_cache_as_it_was(image, tmp_path):
    _built, store = image
    dest = tmp_path / "c"
    extract(store, dest, targets=[Target.parse("cuda:80")], host=HOST)
    before = snapshot(dest)
    code = f"""
import os, signal
from pathlib import Path
from tcmtasks.extract import extract
from tcmtasks.oci.layout import OciLayout
from tcmtasks.producer import Producer, detect, libdir_of, mismatches
def die(n):
    if n > 50_000:  # some files are staged: now the process is killed, no cleanup runs
        os.kill(os.getpid(), signal.SIGKILL)
extract(OciLayout(Path({str(store.path)!r}), "v1"), Path({str(dest)!r}), targets=None,
        host=Producer(), overwrite=True, progress=die)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert proc.returncode == -signal.SIGKILL
    staged = list(dest.glob(".tcm-staging-*"))
    assert len(staged) == 1 and any(staged[0].iterdir())
    after = snapshot(dest)

    def mine(snap):
        return {k: v for k, v in snap.items() if not k.startswith(".tcm")}

    assert mine(after) == mine(before) and len(mine(before)) == 27
    assert purge_stale_staging(dest) == 1
    report = extract(store, dest, targets=None, host=HOST)
    assert len(report.kept) == 6 and not list(dest.glob(".tcm-staging-*"))


def test_docker_save_archive_and_plain_list_manifest(image, tmp_path):
    """MCV/TCV images built with docker: a `docker save` tar, with the older manifest shape
    (a plain JSON array) inside the layer."""
    built, store = image
    layer_tar = gzip.decompress(store.blob_path(built.layer.digest).read_bytes())
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(layer_tar)) as src,
        tarfile.open(fileobj=out, mode="w") as dst,
    ):
        for m in src:
            data = src.extractfile(m).read() if m.isfile() else None
            if m.name == "io.triton.manifest/manifest.json":
                data = json.dumps(json.loads(data)["triton"]).encode()  # the older shape
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    cfg = store.blob_path(json.loads(built.manifest)["config"]["digest"]).read_bytes()
    archive = tmp_path / "saved.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (
            (
                "manifest.json",
                json.dumps(
                    [{"Config": "c.json", "RepoTags": ["x:v1"], "Layers": ["l/layer.tar"]}]
                ).encode(),
            ),
            ("c.json", cfg),
            ("l/layer.tar", out.getvalue()),
        ):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    from tcmtasks.oci.transfer import open_source

    src = open_source(f"docker-archive:{archive}")
    report = extract(
        src, tmp_path / "c", targets=[Target.parse("cuda:90")], host=HOST, dry_run=True
    )
    assert len(report.kept) == 3  # the dry run read the plain-list manifest
    report = extract(src, tmp_path / "c", targets=None, host=HOST)
    assert len(report.kept) == 9
    events = tmp_path / "events.log"
    compile_kernels(tmp_path / "c", events=events)
    assert lookups(events)["hit"] == 9


def test_host_targets_from_kfd_sysfs(tmp_path):
    for i, (gfx, _kind) in enumerate(
        ((0, "cpu"), (90402, "gpu"), (90010, "gpu"), (110000, "gpu"), (90402, "gpu"))
    ):
        node = tmp_path / str(i)
        node.mkdir()
        (node / "properties").write_text(f"cpu_cores_count 0\ngfx_target_version {gfx}\n")
    targets, _names = host_targets(kfd_nodes=str(tmp_path))
    assert [str(t) for t in targets if t.backend == "hip"] == [
        "hip:gfx942",
        "hip:gfx90a",
        "hip:gfx1100:32",
    ]
    assert gfx_name(90402) == "gfx942"


def test_cli_pull_messages(tcm, image, tmp_path):
    _, store = image
    proc = tcm("extract", f"oci:{store.path}:v1", "-c", tmp_path / "c", ok=5)
    assert "no GPU found" in proc.stderr and "--target" in proc.stderr
    proc = tcm("extract", f"oci:{store.path}:v1", "-c", tmp_path / "c", "--target", "cuda:75", ok=3)
    assert "nothing to download" in proc.stderr
    assert "use tcm pull" in tcm("extract", "docker://h.io/x:v", ok=2).stderr
    dry = tcm("extract", f"oci:{store.path}:v1", "-c", tmp_path / "c", "--all", "--dry-run")
    assert "would keep 9 entries" in dry.stdout and not (tmp_path / "c").exists()
    out = tcm("extract", f"oci:{store.path}:v1", "-c", tmp_path / "c", "--target", "cuda:90")
    assert "installed 3 entries" in out.stdout and out.stdout.count("skip ") == 6


def test_each_target_is_named_after_its_own_devices():
    from tcmtasks.targets import pair_devices

    h200, a100 = Target.parse("cuda:90"), Target.parse("cuda:80")
    targets, names = pair_devices([h200, h200, a100], ["NVIDIA H200", "NVIDIA H200", "A100"])
    assert list(zip(targets, names, strict=True)) == [(h200, "NVIDIA H200 x2"), (a100, "A100")]


def test_the_index_records_installed_entries_as_a_scan_would_see_them(image, tmp_path, db):
    """The restore judges each entry where it lands from what it wrote (no read-back) and
    records that in the index: every column a scan of the installed dir would give, but the
    fingerprint (left empty, so the next refresh reads the dir) and the files' mtimes."""
    from tcmtasks import Index, ops

    _built, store = image
    dest = tmp_path / "node"
    report = ops.extract(
        f"oci:{store.path}:v1", ops.RestoreOptions(cache_dir=dest, all_targets=True)
    )
    assert len(report.kept) == 9
    with Index(db) as idx:
        recorded = {e.key: e for e in idx.entries([dest])}
    scanned = {e.key: e for e in scan_root(dest)}
    assert set(recorded) == set(scanned) and len(scanned) == 9

    def view(e):
        return (e.kind, e.name, str(e.target), e.triton_version, e.lookup,
                [(p.code, p.severity) for p in e.problems],
                [(f.name, f.kind, f.size) for f in e.files])  # fmt: skip

    for key, e in scanned.items():
        assert view(recorded[key]) == view(e), key
        assert e.lookup == "hit" and recorded[key].fingerprint == ""


def test_past_the_hold_budget_entries_are_judged_from_disk_and_indexed_by_reading(
    image, tmp_path, db, monkeypatch
):
    """A cache too large to hold every entry's JSON files in memory: after the budget the
    rest are written as they come, judged by reading them back, and indexed from disk; the
    result is the same."""
    from tcmtasks import Index, ops
    from tcmtasks import extract as extract_mod

    monkeypatch.setattr(extract_mod, "HOLD_BUDGET", 3000)  # a few entries' worth
    _built, store = image
    dest = tmp_path / "node"
    report = ops.extract(
        f"oci:{store.path}:v1", ops.RestoreOptions(cache_dir=dest, all_targets=True)
    )
    assert len(report.kept) == 9 and not report.arrived_complete and not report.arrived
    scanned = {e.key: e for e in scan_root(dest)}
    assert all(e.lookup == "hit" and not e.problems for e in scanned.values())
    with Index(db) as idx:
        recorded = {e.key: e for e in idx.entries([dest])}
    assert set(recorded) == set(scanned)
    assert {k: (e.name, e.lookup, e.size) for k, e in recorded.items()} == {
        k: (e.name, e.lookup, e.size) for k, e in scanned.items()
    }


def _tree(root, as_if=None):
    """Every file below ``root`` but tcm's own, with ``root`` in its bytes written as
    ``as_if`` (groups hold absolute paths)."""
    here, there = str(root).encode(), str(as_if or root).encode()
    return {
        str(p.relative_to(root)): p.read_bytes().replace(here, there)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".tcm")
    }


def test_a_restore_waits_for_another_tcm_changing_the_cache(tcm, image, tmp_path):
    """Pods on one node sharing a cache start together: the second waits its turn, saying
    whom it waits for, and then installs."""
    import threading
    import time

    from tcmtasks.cache.lock import locked

    _, store = image
    dest = tmp_path / "c"
    dest.mkdir()
    done = {}
    with locked(dest):
        t = threading.Thread(target=lambda: done.update(
            proc=tcm("extract", f"oci:{store.path}:v1", "--all", "-c", dest)))  # fmt: skip
        t.start()
        time.sleep(2)
        assert t.is_alive() and not list(scan_root(dest))  # waiting, nothing installed
    t.join(120)
    proc = done["proc"]
    assert f"waiting for another tcm (pid {os.getpid()}), which is changing" in proc.stderr
    assert "installed 9 entries" in proc.stdout and len(list(scan_root(dest))) == 9


def test_the_wait_is_bounded(tcm, image, tmp_path):
    from tcmtasks.cache.lock import locked

    _, store = image
    dest = tmp_path / "c"
    dest.mkdir()
    with locked(dest):
        proc = tcm("extract", f"oci:{store.path}:v1", "--all", "-c", dest,
                   "--lock-timeout", "0.5", ok=4)  # fmt: skip
    assert f"another tcm (pid {os.getpid()}) is changing {dest} after waiting 0.5 s" in (
        proc.stderr.replace("\n", " ")
    )
    assert not list(scan_root(dest)) and not list(dest.glob(".tcm-staging-*"))


def test_a_restore_with_nothing_new_stages_nothing_and_takes_no_lock(tcm, image, tmp_path):
    """What is already in the cache is ruled out from the layer's manifest, before any of its
    files is written: a second restore holds no lock (it succeeds while another tcm holds
    it, without waiting) and leaves no staging dir."""
    from tcmtasks.cache.lock import locked

    _, store = image
    dest = tmp_path / "c"
    tcm("extract", f"oci:{store.path}:v1", "--all", "-c", dest)
    before = _tree(dest)
    with locked(dest):
        proc = tcm("extract", f"oci:{store.path}:v1", "--all", "-c", dest, "--lock-timeout",
                   "0", "--json")  # fmt: skip
    report = json.loads(proc.stdout)
    assert report["kept"] == [] and len(report["skipped"]) == 9
    assert {s["reason"] for s in report["skipped"]} == {
        "already in the cache (--overwrite replaces it)"
    }
    assert _tree(dest) == before and not list(dest.glob(".tcm-staging-*"))


def test_concurrent_restores_into_one_dir_all_succeed(tcm, image, tmp_path):
    """8 restores started together into one dir (bounded: the CI machine has 2 cores): every
    one exits 0 and the tree is what one restore alone makes."""
    from concurrent.futures import ThreadPoolExecutor

    _, store = image
    alone, shared = tmp_path / "alone", tmp_path / "shared"
    tcm("extract", f"oci:{store.path}:v1", "--all", "-c", alone)
    with ThreadPoolExecutor(8) as pool:
        procs = list(pool.map(
            lambda _: tcm("extract", f"oci:{store.path}:v1", "--all", "-c", shared, "--json"),
            range(8)))  # fmt: skip
    kept = [len(json.loads(p.stdout)["kept"]) for p in procs]
    assert sum(kept) == 9  # each entry installed once, by whichever run came first
    assert _tree(shared, as_if=alone) == _tree(alone) and len(_tree(alone)) >= 27


def test_an_entry_another_writer_put_there_meanwhile_is_kept(image, tmp_path, db, monkeypatch):
    """Between the judging (its root listed under the lock, the key absent) and the rename,
    a dir with files appears where an entry goes (a writer other than tcm, which waits for
    the lock): the rename fails, that writer's files stay, the rest are installed, and the
    index (written before the renames) is read again from disk."""
    from tcmtasks import Index, ops
    from tcmtasks import extract as extract_mod

    _built, store = image
    dest = tmp_path / "node"
    synced = extract_mod.sync_filesystem
    theirs = []

    def meanwhile(path):
        if not theirs:  # just before the renames
            key = next(p.name for p in next(dest.glob(".tcm-staging-*")).iterdir()
                       if len(p.name) > 20)  # fmt: skip
            (dest / key).mkdir()
            (dest / key / "theirs.json").write_text("{}")
            theirs.append(key)
        synced(path)

    monkeypatch.setattr(extract_mod, "sync_filesystem", meanwhile)
    report = ops.extract(
        f"oci:{store.path}:v1", ops.RestoreOptions(cache_dir=dest, all_targets=True)
    )
    assert len(report.kept) == 8 and [f["key"] for f in report.failed] == theirs
    assert "another process installed it meanwhile" in report.failed[0]["reason"]
    assert [p.name for p in (dest / theirs[0]).iterdir()] == ["theirs.json"]
    with Index(db) as idx:  # read again from disk: the 8, and theirs as it is
        indexed = {e.key: e.lookup for e in idx.entries([dest])}
    assert indexed == {e.key: e.lookup for e in scan_root(dest)}
    assert set(indexed) == {k["key"] for k in report.kept} | set(theirs)


def test_a_damaged_index_does_not_stop_the_restore(image, tmp_path, db):
    """The index rows are written while the disk syncs (before the renames): a damaged index
    must not keep the entries out; the restore installs them, then says how to mend it."""
    from tcmtasks import ops
    from tcmtasks.errors import IndexDbError

    _built, store = image
    db.write_bytes(b"not a database" * 100)
    dest = tmp_path / "node"
    with pytest.raises(IndexDbError, match="tcm index --rebuild"):
        ops.extract(f"oci:{store.path}:v1", ops.RestoreOptions(cache_dir=dest, all_targets=True))
    assert {e.lookup for e in scan_root(dest)} == {"hit"} and len(list(scan_root(dest))) == 9
