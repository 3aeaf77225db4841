"""One image for a fleet: a GPU-less warm of tiny-opt for the H100 and the H200 (the session's
``fleet_warm``), packaged once; each node installs its own GPU's Inductor units and skips the
other's with the reason. That the GPU then hits what it installed is shown on the GPU machines
(bench/gpu_proof_fleet.py, bench/RESULTS.md)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from tcmtasks import ops
from tcmtasks.errors import IncompatibleImage, UsageError
from tcmtasks.fleet import FLEET_FILE, member_dirs, read
from tcmtasks.parts import Part, PartFile, for_gpus

H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"


def graphs(inductor: Path) -> set[str]:
    """The FX-graph and AOTAutograd entries of an Inductor dir: the units whose keys hold the
    GPU's name."""
    return {p.name for p in inductor.glob("fxgraph/*/*")} | {
        p.name for p in inductor.glob("aotautograd/*")
    }


def entries(inductor: Path) -> set[str]:
    return {p.name for p in (inductor / "triton" / "0").glob("*/__grp__*")}


def code(inductor: Path) -> set[str]:
    return {p.name for p in inductor.glob("[a-z0-9][a-z0-9]/*.py")}


@pytest.fixture(scope="module")
def image(fleet_warm, tmp_path_factory) -> str:
    ref = f"oci:{tmp_path_factory.mktemp('img') / 'layout'}:v1"
    os.environ["TCM_DB"] = str(tmp_path_factory.mktemp("db") / "index.db")
    ops.package(fleet_warm.out, ref)
    return ref


def test_one_image_serves_both_gpus(fleet_warm, image: str) -> None:
    info = ops.inspect(image)
    assert sorted(info.gpus) == [H100, H200]
    (part,) = info.parts
    for name, slug in ((H100, "nvidia-h100-80gb-hbm3"), (H200, "nvidia-h200")):
        member = fleet_warm.out / slug
        own = {
            str(p.relative_to(member)) for p in member.rglob("*") if p.is_file()
        }  # every file of that GPU's cache but Triton's entries and tcm's records is its unit
        units = {u for u in own if not u.startswith(("triton/", ".tcm"))}
        assert info.gpus[name]["inductor"] == len(units) == len(part["gpus"][name])
        assert info.gpus[name]["target"] == "cuda:90"
    # the shared generated code ships once; each GPU's graphs only for it
    shared = set(part["gpus"][H100]) & set(part["gpus"][H200])
    assert shared and part["units"] == len(set(part["gpus"][H100]) | set(part["gpus"][H200]))
    assert all(not u.startswith(("fxgraph/", "aotautograd/")) for u in shared)
    rows = info.entries or []
    assert rows and all(r.get("gpus") == [H100, H200] for r in rows)


@pytest.mark.parametrize(("gpu", "slug", "other"), [
    ("nvidia-h100", "nvidia-h100-80gb-hbm3", "nvidia-h200"),
    (H200, "nvidia-h200", "nvidia-h100-80gb-hbm3"),
])  # fmt: skip
def test_each_gpu_installs_its_own_units_and_skips_the_others(
    fleet_warm, image: str, tmp_path: Path, gpu: str, slug: str, other: str
) -> None:
    node = tmp_path / "inductor"
    report = ops.extract(
        image, ops.RestoreOptions(inductor_dir=node, gpus=[gpu], python=fleet_warm.python)
    )
    mine, theirs = fleet_warm.out / slug, fleet_warm.out / other
    assert graphs(node) == graphs(mine) and not graphs(node) & graphs(theirs)
    assert code(node) == code(mine) and code(theirs) - code(mine)
    assert not code(node) & (code(theirs) - code(mine))
    # Triton's entries are chosen by target (both GPUs are cuda:90), as before
    assert entries(node) == entries(mine)
    (plan,) = report.parts
    left = len(graphs(theirs)) + len(code(theirs) - code(mine))
    named = H100 if other.startswith("nvidia-h100") else H200
    assert {g: len(u) for g, u in plan.other_gpus.items()} == {named: left}
    assert report.image_gpus == [H100, H200] and report.gpus == [H200 if named == H100 else H100]


def test_all_installs_every_gpus_units(fleet_warm, image: str, tmp_path: Path) -> None:
    node = tmp_path / "inductor"
    report = ops.extract(
        image, ops.RestoreOptions(inductor_dir=node, all_targets=True, python=fleet_warm.python)
    )
    every = fleet_warm.out / "nvidia-h100-80gb-hbm3", fleet_warm.out / "nvidia-h200"
    assert graphs(node) == graphs(every[0]) | graphs(every[1])
    assert report.gpus is None and not report.parts[0].other_gpus


def test_the_dry_run_counts_what_the_restore_installs(
    fleet_warm, image: str, tmp_path: Path
) -> None:
    node = tmp_path / "inductor"
    h200 = ops.RestoreOptions(inductor_dir=node, gpus=["nvidia-h200"], python=fleet_warm.python)
    plan = ops.extract(image, dataclasses.replace(h200, dry_run=True)).parts[0]
    assert not node.exists()
    done = ops.extract(image, h200).parts[0]
    assert plan.installed == done.installed > 0
    assert {g: len(u) for g, u in plan.other_gpus.items()} == {
        g: len(u) for g, u in done.other_gpus.items()
    }


def test_the_node_installs_for_its_own_gpu(
    fleet_warm, image: str, tmp_path: Path, monkeypatch
) -> None:
    """Without --gpu, the host's GPU decides (nvidia-ml-py on a node; this machine has no
    GPU, so the host's answer is stood in for: the GPU machines run the real one)."""
    from tcmtasks.ops import restore
    from tcmtasks.targets import Target

    monkeypatch.setattr(restore, "host_gpus", lambda: ([Target("cuda", "90", 32)], [H200]))
    node = tmp_path / "inductor"
    cuda90 = [Target.parse("cuda:90")]
    report = ops.extract(
        image, ops.RestoreOptions(inductor_dir=node, targets=cuda90, python=fleet_warm.python)
    )
    assert report.gpus == [H200]
    assert graphs(node) == graphs(fleet_warm.out / "nvidia-h200")


def test_a_node_whose_gpu_the_image_does_not_serve_installs_nothing(
    image: str, tmp_path: Path, tcm
) -> None:
    node = tmp_path / "inductor"
    r = tcm("extract", image, "--gpu", "NVIDIA A100-SXM4-80GB", "--inductor-dir", node,
            "-c", tmp_path / "triton", ok=3)  # fmt: skip
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "--gpu NVIDIA A100-SXM4-80GB is none of its GPUs" in line
    assert f"serves {H100} (cuda:90), {H200} (cuda:90)" in line
    assert not node.exists() and not (tmp_path / "triton").exists()


def test_a_node_of_another_gpu_is_refused_before_downloading(
    fleet_warm, image: str, tmp_path: Path, monkeypatch
) -> None:
    from tcmtasks.ops import restore
    from tcmtasks.targets import Target

    monkeypatch.setattr(restore, "host_gpus", lambda: ([Target("cuda", "90", 32)], ["GH200"]))
    with pytest.raises(IncompatibleImage) as info:
        ops.extract(
            image,
            ops.RestoreOptions(inductor_dir=tmp_path / "i", targets=[Target.parse("cuda:90")]),
        )
    assert info.value.exit_code == 3
    assert f"serves {H100} (cuda:90), {H200} (cuda:90); this node's GPU is GH200" in str(info.value)
    assert not (tmp_path / "i").exists()


def test_a_host_without_a_gpu_must_say_whose_units(image: str, tmp_path: Path, tcm) -> None:
    r = tcm("extract", image, "--target", "cuda:90", "--inductor-dir", tmp_path / "i", ok=2)
    assert "--gpu NAME" in r.stderr and H200 in r.stderr
    assert not (tmp_path / "i").exists()


def test_gpu_and_all_contradict(image: str, tcm) -> None:
    r = tcm("extract", image, "--gpu", "nvidia-h200", "--all", ok=2)
    assert "--all and --gpu contradict each other" in r.stderr


def test_an_ambiguous_gpu_name_names_the_candidates() -> None:
    from tcmtasks.gpuchoice import match_gpu

    served = {"NVIDIA H100 80GB HBM3": "cuda:90", "NVIDIA H100 PCIe": "cuda:90"}
    assert match_gpu("nvidia h100 pcie", served) == "NVIDIA H100 PCIe"
    assert match_gpu("nvidia-h100-80gb-hbm3", served) == "NVIDIA H100 80GB HBM3"
    with pytest.raises(IncompatibleImage, match="matches NVIDIA H100 80GB HBM3 and NVIDIA"):
        match_gpu("nvidia-h100", served)


def test_the_cli_reports_the_other_gpus_units(fleet_warm, image: str, tmp_path: Path, tcm) -> None:
    r = tcm("extract", image, "--gpu", "nvidia-h200", "--inductor-dir", tmp_path / "i",
            "--python", fleet_warm.python)  # fmt: skip
    assert (
        f"skip inductor: {len(graphs(fleet_warm.out / 'nvidia-h100-80gb-hbm3')) + 1} units"
        f" of {H100}: this node installs {H200}'s" in r.stdout
    ), r.stdout
    shown = tcm("inspect", image).stdout
    assert f"GPU {H100} (cuda:90): 10 inductor units" in shown
    assert f"GPU {H200} (cuda:90): 10 inductor units" in shown


def test_a_fleet_dir_indexes_as_its_members(fleet_warm, tmp_path: Path) -> None:
    result = ops.index([fleet_warm.out], db=tmp_path / "i.db")
    roots = {r.path for r in result.roots}
    assert roots >= {
        (fleet_warm.out / m / "triton" / "0").resolve()
        for m in ("nvidia-h100-80gb-hbm3", "nvidia-h200")
    }
    assert member_dirs(fleet_warm.out) == [
        fleet_warm.out / "nvidia-h100-80gb-hbm3", fleet_warm.out / "nvidia-h200"
    ]  # fmt: skip


def test_a_damaged_fleet_record_is_a_clear_error(tmp_path: Path) -> None:
    from tcmtasks.errors import CacheError

    (tmp_path / FLEET_FILE).write_text('{"members": [{"dir": "../x"}]}')
    with pytest.raises(CacheError, match="not a fleet record tcm wrote"):
        read(tmp_path)
    (tmp_path / FLEET_FILE).write_text(json.dumps({"members": [
        {"dir": "../x", "gpu": "g", "target": "cuda:90", "how": "native", "profile": "p"}
    ]}))  # fmt: skip
    with pytest.raises(CacheError, match="not a dir of its own"):
        read(tmp_path)


def _part(base: Path, files: dict[str, bytes]) -> Part:
    out = []
    for rel, data in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out.append(PartFile(rel, path, len(data)))
    return Part("inductor", base, files=out)


def test_parts_of_two_gpus_merge_each_unit_once(tmp_path: Path) -> None:
    a = _part(tmp_path / "a", {"fxgraph/ab/k1/e": b"1", "cd/code.py": b"same"})
    b = _part(tmp_path / "b", {"fxgraph/ef/k2/e": b"2", "cd/code.py": b"same"})
    merged = for_gpus([a, b], [["A"], ["B"]])
    assert [f.rel for f in merged.files] == ["cd/code.py", "fxgraph/ab/k1/e", "fxgraph/ef/k2/e"]
    assert merged.gpus == {"A": ["cd/code.py", "fxgraph/ab/k1"],
                           "B": ["cd/code.py", "fxgraph/ef/k2"]}  # fmt: skip


def test_one_path_with_two_contents_is_refused(tmp_path: Path) -> None:
    a = _part(tmp_path / "a", {"cd/x.best_config": b"{'XBLOCK': 64}"})
    b = _part(tmp_path / "b", {"cd/x.best_config": b"{'XBLOCK': 128}"})
    with pytest.raises(UsageError, match=r"hold different files at cd/x\.best_config"):
        for_gpus([a, b], [["A"], ["B"]])
    with pytest.raises(UsageError, match="not one per GPU"):
        for_gpus([a, b], [["A"], []])


def test_a_fleet_dir_packages_like_its_members_given_one_by_one(
    fleet_warm, image: str, tmp_path: Path
) -> None:
    members = member_dirs(fleet_warm.out)
    copy = tmp_path / "copy"
    for m in members:  # elsewhere, no fleet record: the same image from the dirs themselves
        shutil.copytree(m, copy / m.name)
    second = f"oci:{tmp_path / 'layout'}:v1"
    ops.package([copy / m.name for m in members], second, db=tmp_path / "i.db")
    first, again = ops.inspect(image), ops.inspect(second)
    assert first.gpus == again.gpus
    assert [p["gpus"] for p in first.parts] == [p["gpus"] for p in again.parts]


@pytest.mark.parametrize("planted", ["triton", "triton/0"])
def test_a_link_planted_where_tritons_entries_go_is_never_written_through(
    fleet_warm, image: str, tmp_path: Path, planted: str
) -> None:
    """The Triton root inside Inductor's dir (``triton/0``), or the dir above it, planted as
    a link: the restore stops before staging anything there (exit 4), writes nothing through
    it and installs nothing."""
    from tcmtasks.errors import CacheError

    victim = tmp_path / "victim"
    victim.mkdir()
    node = tmp_path / "inductor"
    (node / planted).parent.mkdir(parents=True, exist_ok=True)
    (node / planted).symlink_to(victim, target_is_directory=True)
    with pytest.raises(CacheError, match=f"{node / planted} is a symbolic link") as info:
        ops.extract(
            image,
            ops.RestoreOptions(inductor_dir=node, gpus=["nvidia-h200"], python=fleet_warm.python),
        )
    assert info.value.exit_code == 4
    assert not any(victim.iterdir())
    assert not graphs(node) and not code(node)
