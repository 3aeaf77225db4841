"""vLLM's compile cache (the layout vLLM writes: torch_compile_cache/<hash>/rank_<r>_<dp>/ with
vllm_compile_cache.py, inductor_cache/ and triton_cache/), built from real parts: the session's
Inductor cache and Triton entries compiled on the CPU."""

from __future__ import annotations

import ast
import json
import pprint
import shutil
import subprocess
import sys
import tarfile

import pytest

from tcmtasks.oci.image import canonical
from tests.conftest import compile_kernels, lookups, relocate_copy
from tests.support.images import image_from

HASH = "3f1e9c2ab7"
RANKS = ("rank_0_0", "rank_1_0")


@pytest.fixture
def vllm_cache(tmp_path, warmed_inductor, compiled_cache):
    root = tmp_path / "producer" / "vllm"
    for rank in RANKS:
        rank_dir = root / "torch_compile_cache" / HASH / rank
        shutil.copytree(warmed_inductor, rank_dir / "inductor_cache")
        relocate_copy(compiled_cache[0], rank_dir / "triton_cache")
        code = next((rank_dir / "inductor_cache").glob("*/*.cpp"))
        table = {(None, 0, "inductor"): ("fakehash", str(code)), "other": 3}
        (rank_dir / "vllm_compile_cache.py").write_text(pprint.pformat(table))
    return root


def test_vllm_cache_round_trip_rewrites_paths_and_hits(tcm, vllm_cache, tmp_path):
    image = f"oci:{tmp_path / 'img'}:v1"
    packed = json.loads(tcm("package", vllm_cache, image, "--json").stdout)
    (part,) = packed["parts"]
    assert part["kind"] == "vllm" and len(part["triton_roots"]) == 2
    assert packed["entries"] == 9  # the two ranks' copies of each kernel ship once
    labels = json.loads(tcm("inspect", image, "--json").stdout)["labels"]
    assert int(labels["cache.vllm.image/cache-size-bytes"]) == part["bytes"]
    node = tmp_path / "node" / "vllm"
    report = json.loads(tcm("extract", image, "--all", "--vllm-dir", node, "--json").stdout)
    assert report["parts"][0]["failed"] == [] and report["parts"][0]["units"] == part["units"]
    assert len(report["kept"]) == 18  # each kernel into each rank's Triton cache
    for rank in RANKS:
        rank_dir = node / "torch_compile_cache" / HASH / rank
        table = ast.literal_eval((rank_dir / "vllm_compile_cache.py").read_text())
        path = table[(None, 0, "inductor")][1]
        assert path.startswith(str(rank_dir / "inductor_cache")) and table["other"] == 3
        assert (rank_dir / "inductor_cache").joinpath(*path.split("/")[-2:]).is_file()
        for grp in (rank_dir / "triton_cache").glob("*/__grp__*.json"):
            assert all(
                p.startswith(str(rank_dir / "triton_cache"))
                for p in json.loads(grp.read_text())["child_paths"].values()
            )
    events = tmp_path / "events.jsonl"
    compile_kernels(node / "torch_compile_cache" / HASH / "rank_1_0" / "triton_cache",
                    events=events)  # fmt: skip
    assert lookups(events) == {"hit": 9, "miss": 0, "store": 0}


def test_unreadable_index_file_is_refused_and_same_paths_restores(tcm, vllm_cache, tmp_path):
    rank0 = vllm_cache / "torch_compile_cache" / HASH / "rank_0_0"
    (rank0 / "vllm_compile_cache.py").write_text("{'broken': __import__('os')}")
    image = f"oci:{tmp_path / 'img'}:v1"
    tcm("package", vllm_cache, image)
    node = tmp_path / "node"
    r = tcm("extract", image, "--all", "--vllm-dir", node, ok=3)
    # one line, naming the unit and what to do; the image's parts arrive all or none
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "rank_0_0/vllm_compile_cache.py" in line
    assert "--same-paths" in line and "nothing was installed" in line
    assert not list(node.rglob("vllm_compile_cache.py"))
    assert not list(node.rglob("__grp__*.json"))
    shutil.rmtree(vllm_cache)  # the producer's own path, free again on this "node"
    refused = tcm("extract", image, "--all", "--same-paths", ok=2)  # no dir named: nowhere
    assert f"--same-paths would restore the vllm part to {vllm_cache}" in refused.stderr
    assert "--same-paths-root" in refused.stderr and not vllm_cache.exists()
    tcm("extract", image, "--all", "--same-paths", "--same-paths-root", vllm_cache.parent)
    restored = rank0 / "vllm_compile_cache.py"
    assert restored.read_text() == "{'broken': __import__('os')}"  # as shipped, unparsed
    assert len(list((rank0 / "triton_cache").glob("*/__grp__*.json"))) == 9


def test_a_link_planted_in_the_vllm_dir_is_never_written_through(tcm, vllm_cache, tmp_path):
    image = f"oci:{tmp_path / 'img'}:v1"
    tcm("package", vllm_cache, image)
    victim = tmp_path / "victim"
    victim.mkdir()
    node = tmp_path / "node"
    node.mkdir()
    (node / "torch_compile_cache").symlink_to(victim)
    r = tcm("extract", image, "--all", "--vllm-dir", node, ok=4)
    assert f"{node / 'torch_compile_cache'} is a symbolic link" in r.stderr
    assert not any(victim.iterdir())


@pytest.mark.parametrize(
    ("index", "why"),
    [
        ("[" + ",".join(["1"] * 2_000_000) + "]", "holds over 200000 tokens"),
        ("{[]: '/producer/vl/x'}", "(TypeError)"),
        ("1" + "+1" * 100_000, "holds over 200000 tokens"),
        ("[" * 5000 + "]" * 5000, "(SyntaxError)"),
        ("'" + "x" * (5 << 20) + "'", "is over 4 MiB"),
    ],
    ids=["a-10MB-list", "unhashable-key", "long-sum", "deep-nesting", "over-4MiB"],
)
def test_a_hostile_index_is_the_parts_failure_in_bounded_memory(
    tcm, vllm_cache, tmp_path, index, why
):
    """The index is parsed with its size and token count bounded before any AST is built
    (a 10 MB list of ints had peaked at 4.9 GB), under a 1.5 GiB address-space cap here; any
    parse error refuses the restore with one line before anything of the image is installed
    (it had crashed with exit 70, or installed the Inductor part and dropped the rest)."""
    import resource

    rank0 = vllm_cache / "torch_compile_cache" / HASH / "rank_0_0"
    (rank0 / "vllm_compile_cache.py").write_text(index)
    image = f"oci:{tmp_path / 'img'}:v1"
    tcm("package", vllm_cache, image)
    node = tmp_path / "node"
    cap = 1536 << 20

    def capped() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    r = subprocess.run(
        [sys.executable, "-m", "tcmtasks.cli", "extract", image, "--all", "--vllm-dir",
         str(node), "-c", str(tmp_path / "t")],
        env=tcm.env, capture_output=True, text=True, preexec_fn=capped, timeout=300,
    )  # fmt: skip
    assert r.returncode == 3, r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and why in line and "nothing was installed" in line
    assert "rank_0_0/vllm_compile_cache.py" in line
    assert not [p for p in node.rglob("*") if p.is_file() and ".tcm" not in str(p)]
    assert not (tmp_path / "t").exists() or not list((tmp_path / "t").glob("*/__grp__*"))


@pytest.mark.parametrize("source", ["/etc", "/tmp/../etc/vllm", "relative/vllm"])
def test_same_paths_writes_only_below_a_named_dir(tcm, vllm_cache, tmp_path, source):
    """The image alone chose where --same-paths wrote (any absolute dir, '..' accepted). Now
    the producer's path must be a plain absolute path below a dir the user named."""
    image = f"oci:{tmp_path / 'img'}:v1"
    tcm("package", vllm_cache, image)
    from tcmtasks.oci.layout import OciLayout

    store = OciLayout(tmp_path / "img", "v1")
    manifest = json.loads(store.manifest()[0])
    with (
        store.open_blob(manifest["layers"][0]["digest"]) as raw,
        tarfile.open(fileobj=raw, mode="r|gz") as tar,
    ):
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    doc = json.loads(members["io.triton.manifest/manifest.json"])
    doc["parts"][0]["source"] = source
    members["io.triton.manifest/manifest.json"] = canonical(doc)
    config = json.loads(store.open_blob(manifest["config"]["digest"]).read())
    image_from(tmp_path / "moved", members, config["config"]["Labels"])
    r = tcm("extract", f"oci:{tmp_path / 'moved'}:v1", "--all", "--same-paths",
            "--same-paths-root", tmp_path, ok=None)  # fmt: skip
    assert r.returncode in (2, 3), r.stderr
    assert any(
        w in r.stderr for w in ("not a plain path", "under no dir you named", "does not say where")
    )
    assert len(r.stderr.strip().splitlines()) == 1
