"""The whole Inductor cache shipped and restored: Inductor's own counters say the restored
cache hit at another path, in a fresh process, with nothing compiled."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time

import pytest

from tcmtasks import parts
from tcmtasks.errors import HostileImage
from tcmtasks.extract import Destinations, extract
from tcmtasks.oci.image import MT_LAYER, MT_MANIFEST, canonical
from tcmtasks.oci.layout import OciLayout
from tcmtasks.producer import Producer
from tests.conftest import H100_TAR, SHARED_FIXTURES
from tests.parts.conftest import compiled_nothing, run_model

H100_INDUCTOR = SHARED_FIXTURES / "h100-inductor-opt125m-full-torch2.11.tar.gz"


def tree(root):
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_restored_elsewhere_the_model_compiles_nothing(tcm, inductor_cache, tmp_path):
    image = f"oci:{tmp_path / 'img'}:v1"
    packed = json.loads(tcm("package", inductor_cache, image, "--json").stdout)
    (part,) = packed["parts"]
    assert part["kind"] == "inductor" and part["files"] > 5 and packed["entries"] == 0
    info = json.loads(tcm("inspect", image, "--json").stdout)
    assert [p["kind"] for p in info["parts"]] == ["inductor"]
    assert info["producer"]["torch"].startswith("2.13.0")  # the warm's record, as a label
    assert json.loads(info["labels"]["io.tcm.parts"])["inductor"]["files"] == part["files"]
    shutil.rmtree(inductor_cache)  # the producer's dir is gone: nothing can be read from it
    node = tmp_path / "node" / "inductor"
    report = json.loads(tcm("extract", image, "--all", "--inductor-dir", node, "--json").stdout)
    (restored,) = report["parts"]
    assert restored["skipped"] is None and restored["units"] == part["units"]
    assert compiled_nothing(run_model(node))


def test_a_dir_with_other_entries_keeps_them(tcm, inductor_cache, tmp_path):
    image = f"oci:{tmp_path / 'img'}:v1"
    tcm("package", inductor_cache, image)
    node = tmp_path / "node"
    (node / "fxgraph" / "zz" / "fother").mkdir(parents=True)
    (node / "fxgraph" / "zz" / "fother" / "entry").write_bytes(b"another model's graph")
    (node / "ab").mkdir()
    (node / "ab" / "cabother.py").write_text("# another model's code\n")
    before = tree(node)
    report = json.loads(tcm("extract", image, "--all", "--inductor-dir", node, "--json").stdout)
    assert report["parts"][0]["units"] > 5 and report["parts"][0]["existing"] == 0
    after = tree(node)
    assert all(after[k] == v for k, v in before.items())  # untouched
    assert compiled_nothing(run_model(node))
    again = json.loads(tcm("extract", image, "--all", "--inductor-dir", node, "--json").stdout)
    assert again["parts"][0]["units"] == 0  # everything is there: kept, not rewritten
    assert again["parts"][0]["existing"] == report["parts"][0]["units"]
    forced = json.loads(
        tcm("extract", image, "--all", "--inductor-dir", node, "--overwrite", "--json").stdout
    )
    assert forced["parts"][0]["units"] == report["parts"][0]["units"]
    assert not any(p.name.startswith(".tcm-staging") for p in node.iterdir())


def test_another_torch_is_skipped_with_its_reason(tcm, inductor_cache, tmp_path):
    record = inductor_cache / ".tcm-producer.json"
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "torch": "2.12.0"}))
    image = f"oci:{tmp_path / 'img'}:v1"
    tcm("package", inductor_cache, image)
    node = tmp_path / "node"
    proc = tcm("extract", image, "--all", "--inductor-dir", node)
    assert "skip inductor part" in proc.stdout and "built with torch 2.12.0" in proc.stdout
    assert not node.exists() or not any(node.rglob("*.py"))
    forced = tcm("extract", image, "--all", "--inductor-dir", node, "--force")
    assert "installed" in forced.stdout and "--force" in forced.stderr
    assert any(node.rglob("*.cpp"))


def test_same_input_same_digest_and_no_transient_files(tcm, inductor_cache, tmp_path):
    (inductor_cache / "locks" / "x.lock").parent.mkdir(exist_ok=True)
    (inductor_cache / "locks" / "x.lock").write_text("")
    (inductor_cache / "tmp.pid_1_abc").mkdir()
    (inductor_cache / "tmp.pid_1_abc" / "half").write_text("in flight")
    (inductor_cache / ".tcm-staging-1-x").mkdir()
    first = json.loads(tcm("package", inductor_cache, f"oci:{tmp_path / 'a'}:v1", "--json").stdout)
    second = json.loads(tcm("package", inductor_cache, f"oci:{tmp_path / 'b'}:v1", "--json").stdout)
    assert first["digest"] == second["digest"]
    store = OciLayout(tmp_path / "a", "v1")
    layer = json.loads(store.manifest()[0])["layers"][0]
    with store.open_blob(layer["digest"]) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
        names = [m.name for m in tar]
    assert names[2] == "io.triton.manifest/manifest.json"
    assert any(n.startswith("io.inductor.cache/fxgraph/") for n in names)
    assert not any("locks" in n or "tmp.pid_" in n or ".tcm-" in n for n in names)


def _hostile_image(tmp_path, members, manifest_doc):
    """An image whose layer holds ``members`` ((name, bytes) or (name, TarInfo-maker))."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            if name == "MANIFEST":
                data = canonical(manifest_doc)
                name = "io.triton.manifest/manifest.json"
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    store = OciLayout(tmp_path / "hostile", "v1", create=True)
    blob = store.add_blob_bytes(buf.getvalue(), MT_LAYER["none"])
    config = store.add_blob_bytes(canonical({"config": {"Labels": {}}}), "application/json")
    store.put_manifest(
        canonical(
            {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config.descriptor(),
             "layers": [blob.descriptor()]}
        ),
        MT_MANIFEST,
    )  # fmt: skip
    return store


PART = {"kind": "inductor", "source": "/tmp/P", "mount": "", "files": 1, "bytes": 1}


@pytest.mark.parametrize(
    ("members", "doc", "message"),
    [
        ([("io.inductor.cache/ab/x.py", b"x"), ("MANIFEST", b"")], {"parts": [PART]},
         "before the in-layer manifest"),
        ([("MANIFEST", b""), ("io.inductor.cache/ab/.hidden", b"x")], {"parts": [PART]},
         "a name tcm never writes"),
        ([("MANIFEST", b""), ("io.vllm.cache/x", b"x")], {"parts": [PART]},
         "belongs to no part"),
        ([("MANIFEST", b""), ("io.evil.cache/x", b"x")], {"parts": [PART]}, "outside"),
        ([("MANIFEST", b"")], {"parts": [{**PART, "kind": "evil"}]}, "unknown part"),
        ([("MANIFEST", b"")], {"parts": [{**PART, "mount": "../../etc"}]}, "bad mount"),
        ([("MANIFEST", b"")], {"triton": [{"key": "K" * 52, "dests": [["inductor", "../x"]]}]},
         "bad destination"),
    ],
)  # fmt: skip
def test_hostile_part_members_install_nothing(tmp_path, members, doc, message):
    store = _hostile_image(tmp_path, members, doc)
    node = tmp_path / "node"
    node.mkdir()
    (node / "keep").write_text("mine")
    dests = Destinations(tmp_path / "triton", node, tmp_path / "vllm")
    with pytest.raises(HostileImage, match=message):
        extract(store, tmp_path / "triton", targets=None, host=Producer(), dests=dests)
    assert tree(node) == {"keep": b"mine"}
    assert not list(tmp_path.rglob(".tcm-staging-*"))


def test_parts_are_found_and_cut_into_units(inductor_cache, tmp_path):
    part = parts.find(inductor_cache)
    assert part is not None and part.kind == "inductor" and part.mount == ""
    assert parts.find(tmp_path) is None  # an empty dir is a (new) Triton cache
    assert parts.unit_of("fxgraph/qg/fkey/entry") == "fxgraph/qg/fkey"
    assert parts.unit_of("aotautograd/akey/entry") == "aotautograd/akey"
    assert parts.unit_of("ab/cab.py") == "ab/cab.py"
    assert parts.unit_of("torch_compile_cache/h/rank_0_0/inductor_cache/fxgraph/a/b/c") == (
        "torch_compile_cache/h/rank_0_0/inductor_cache/fxgraph/a/b"
    )
    for bad in ("../x", "/abs", "a//b", ".hidden", "a/./b", "x\\y", ""):
        assert not parts.check_rel(bad), bad


@pytest.fixture
def h100_inductor(tmp_path):
    if not H100_INDUCTOR.exists():
        pytest.skip(f"{H100_INDUCTOR} is not present (a fixture of the GPU machine)")
    with tarfile.open(H100_INDUCTOR) as tar:
        tar.extractall(tmp_path / "producer", filter="data")
    return tmp_path / "producer" / "P"


def test_h100_inductor_cache_structure(tcm, h100_inductor, tmp_path):
    assert H100_TAR.parent == H100_INDUCTOR.parent
    image = f"oci:{tmp_path / 'img'}:v1"
    packed = json.loads(tcm("package", h100_inductor, image, "--json").stdout)
    assert packed["entries"] == 14 and packed["parts"][0]["triton_roots"] == ["triton/0"]
    info = json.loads(tcm("inspect", image, "--json").stdout)
    assert all(r["dests"] == [["inductor", "triton/0"]] for r in info["entries"])
    node = tmp_path / "node"
    report = json.loads(
        tcm("extract", image, "--target", "cuda:90", "--inductor-dir", node, "--json").stdout
    )
    assert len(report["kept"]) == 14
    assert {k["dest"] for k in report["kept"]} == {str(node / "triton" / "0")}
    for grp in (node / "triton" / "0").glob("*/__grp__*.json"):
        paths = json.loads(grp.read_text())["child_paths"].values()
        assert all(p.startswith(str(node / "triton" / "0")) for p in paths)
    assert any((node / "fxgraph").rglob("*")) and any((node / "aotautograd").rglob("*"))
    tcm("doctor", "-c", node)  # healthy: exit 0


def test_index_lists_units_and_gc_budgets_the_whole_cache(tcm, inductor_cache):
    listed = json.loads(tcm("list", "-c", inductor_cache, "--all", "--json").stdout)
    kinds = {e["kind"] for e in listed}
    assert {"fx-graph", "aot-graph", "code"} <= kinds
    total = sum(e["size"] for e in listed)
    graph = next(e for e in listed if e["kind"] == "fx-graph")
    assert graph["key"].startswith("fxgraph/") and graph["file_count"] >= 1
    old = 10 * 86400
    for p in inductor_cache.rglob("*"):
        os.utime(p, (time.time() - old, time.time() - old))  # settled: not being written
    budget = total // 2
    plan = json.loads(
        tcm("gc", "-c", inductor_cache, "--max-size", str(budget), "--dry-run", "--json").stdout
    )
    assert plan["bytes"] >= total - budget and plan["entries"] >= 1
    done = json.loads(
        tcm("gc", "-c", inductor_cache, "--max-size", str(budget), "-y", "--json").stdout
    )
    assert done["result"]["done"] == plan["entries"]
    after = json.loads(tcm("list", "-c", inductor_cache, "--all", "--json").stdout)
    assert sum(e["size"] for e in after) <= budget
    for e in plan["actions"]:  # each unit left whole: its dir or file is gone entirely
        assert not (inductor_cache / e["key"]).exists()
    for e in after:
        if e["kind"] in ("fx-graph", "aot-graph"):
            assert (inductor_cache / e["key"]).is_dir() and any(
                (inductor_cache / e["key"]).iterdir()
            )
    assert not (inductor_cache / ".tcm-trash").exists() or not any(
        (inductor_cache / ".tcm-trash").iterdir()
    )


@pytest.mark.parametrize("planted", ["fxgraph", "aotautograd"])
def test_a_link_planted_in_the_destination_is_never_written_through(
    tcm, inductor_cache, tmp_path, planted
):
    """Inductor's default dir lives in /tmp, where another user can plant ``fxgraph ->
    /victim`` before the node's first run. The restore stops at the link (exit 4, one line),
    writes nothing through it, and installs nothing; the same image then restores once the
    link is gone."""
    image = f"oci:{tmp_path / 'img'}:v1"
    tcm("package", inductor_cache, image)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("mine")
    node = tmp_path / "node"
    node.mkdir()
    (node / planted).symlink_to(victim)
    r = tcm("extract", image, "--all", "--inductor-dir", node, "-c", tmp_path / "t", ok=4)
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and f"{node / planted} is a symbolic link" in line
    assert "nothing was installed" in line
    assert tree(victim) == {"precious": b"mine"}
    assert sorted(p.name for p in node.iterdir() if not p.name.startswith(".tcm")) == [planted]
    (node / planted).unlink()
    report = json.loads(tcm("extract", image, "--all", "--inductor-dir", node, "--json").stdout)
    assert report["parts"][0]["units"] > 5
