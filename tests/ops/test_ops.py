"""The operations layer as a Python user meets it: the README's example end to end, the lock
every changing operation takes by itself, progress callbacks, and the error contract."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tcmtasks import errors, ops, scan_root
from tcmtasks.cache.health import repair
from tcmtasks.cache.lock import LOCK_NAME
from tcmtasks.errors import CacheLocked, TcmError
from tcmtasks.prune import apply, plan_ir
from tcmtasks.targets import Target
from tests.conftest import REPO, compile_kernels, lookups

HOLD_LOCK = """
import sys, time
from pathlib import Path
from tcmtasks.cache.lock import locked
with locked(Path(sys.argv[1])):
    Path(sys.argv[2]).write_text("held")
    time.sleep(60)
"""


def test_readme_python_example_round_trip(cache, tmp_path, start_registry, db):
    reg = start_registry()
    registry = ops.RegistryOptions(insecure_hosts=[reg.host])
    built = ops.package(cache, f"oci:{tmp_path / 'img'}:v1")
    assert len(built.entries) == 9 and built.digest.startswith("sha256:")
    pushed = ops.push(
        f"oci:{tmp_path / 'img'}:v1", f"docker://{reg.host}/team/cache:v1", registry=registry
    )
    assert pushed.digest == built.digest and pushed.copied == 2
    info = ops.inspect(f"docker://{reg.host}/team/cache:v1", registry=registry)
    assert info.entry_count == 9 and len(info.entries or []) == 9
    node = tmp_path / "node"
    report = ops.pull(
        f"docker://{reg.host}/team/cache:v1",
        ops.RestoreOptions(cache_dir=node, targets=[Target.parse("cuda:90")]),
        registry=registry,
    )
    assert len(report.kept) == 3 and len(report.skipped) == 6
    # the runtime itself says the restored kernels hit
    events = tmp_path / "events.jsonl"
    compile_kernels(node, targets=("cuda:90",), events=events)
    assert lookups(events) == {"hit": 3, "miss": 0, "store": 0}
    # and the index knows what arrived
    listed = ops.list_entries([node], refresh_index=False)
    assert len(listed.entries) == 3


@pytest.fixture
def held(cache, tmp_path):
    """Another process holding the cache's lock, as a concurrent tcm would."""
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(cache), str(ready)],
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    yield cache
    proc.kill()
    proc.wait()


def test_changing_operations_take_the_lock_themselves(held, tmp_path, db):
    before = sorted(p.name for p in held.rglob("*"))
    kernels = [e for e in scan_root(held) if e.kind == "kernel"]
    with pytest.raises(CacheLocked) as info:
        apply(plan_ir(kernels))  # the library function, not only the CLI, locks
    assert info.value.exit_code == 4 and "another tcm" in str(info.value)
    moved = tmp_path / "moved"  # a copy whose groups still point at the original: sick
    shutil.copytree(held, moved)
    sick = next(e for e in scan_root(moved) if e.problems)
    (moved / LOCK_NAME).unlink(missing_ok=True)
    assert repair(sick)  # ...unlocked there, so it repairs
    with pytest.raises(CacheLocked):
        repair(next(e for e in scan_root(held) if e.kind == "kernel"))
    for op in (
        lambda: ops.prune([held], dry_run=False),
        lambda: ops.gc([held], max_size=0),
        lambda: ops.doctor([held], fix=True),
    ):
        with pytest.raises(CacheLocked):
            op()
    assert sorted(p.name for p in held.rglob("*")) == before  # nothing was touched


def test_progress_reaches_the_callback(cache, tmp_path, db):
    image = f"oci:{tmp_path / 'img'}:v1"
    packing: list[ops.ProgressEvent] = []
    built = ops.package(cache, image, progress=packing.append)
    packed = [e for e in packing if e.task == "packaging"]
    assert packed and {e.unit for e in packed} == {"bytes"}
    assert packed[-1].total == sum(e.size for e in built.entries)
    assert packed[-1].done >= packed[-1].total  # the tar's headers on top of the files
    events: list[ops.ProgressEvent] = []
    report = ops.extract(
        image,
        ops.RestoreOptions(cache_dir=tmp_path / "node", all_targets=True),
        progress=events.append,
    )
    assert len(report.kept) == 9
    assert events and {e.task for e in events} == {"extracting"}
    assert {e.unit for e in events} == {"bytes"}
    done = [e.done for e in events]
    assert done == sorted(done) and done[-1] >= report.bytes


def test_operations_validate_their_inputs(cache, tmp_path, db):
    with pytest.raises(errors.UsageError, match="give --max-size"):
        ops.gc([cache])
    with pytest.raises(errors.UsageError, match="bad size"):
        ops.gc([cache], max_size="lots")
    with pytest.raises(errors.UsageError, match="unknown builder"):
        ops.package(cache, f"oci:{tmp_path / 'x'}", builder="kaniko")
    with pytest.raises(errors.UsageError, match="use tcm pull"):
        ops.extract("docker://example.com/a/b:c")
    with pytest.raises(errors.UsageError, match="contradict"):
        ops.pull(
            f"oci:{tmp_path}",
            ops.RestoreOptions(all_targets=True, targets=[Target.parse("cuda:90")]),
        )
    (tmp_path / "out").write_text("a file")
    with pytest.raises(errors.CacheError, match="not a directory"):
        ops.index([tmp_path / "out"])
    with pytest.raises(errors.UsageError, match="is a file"):
        ops.warm(ops.TritonWarm("tutorials", ["cuda:90"]), tmp_path / "out")


def test_every_exception_lives_in_errors_with_an_exit_code():
    defined_elsewhere = []
    for path in (REPO / "tcmtasks").rglob("*.py"):
        if path.name == "errors.py" or "data" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if any(b.endswith(("Error", "Exception")) or b == "TcmError" for b in bases):
                    defined_elsewhere.append(f"{path.relative_to(REPO)}:{node.name}")
    assert defined_elsewhere == []
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, TcmError)]
    assert issubclass(errors.OversizeHeader, Exception)  # the one that is the tarfile's kind
    assert len(classes) >= 15
    for cls in classes:
        if cls not in (TcmError, errors.Interrupted):
            assert cls.exit_code in (1, 2, 3, 4, 5), cls
    assert errors.GroupFormatError.exit_code == 4 and issubclass(
        errors.GroupFormatError, ValueError
    )


BUG = """
import sys
import tcmtasks.ops as ops
def broken(**kwargs):
    raise ZeroDivisionError("boom")
ops.gpu = broken
sys.argv = ["tcm", "gpu"]
from tcmtasks.cli import main
main()
"""


@pytest.mark.parametrize("debug", [False, True])
def test_a_bug_is_one_line_unless_debugging(debug):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    if debug:
        env["TCM_DEBUG"] = "1"
    proc = subprocess.run([sys.executable, "-c", BUG], env=env, capture_output=True, text=True)
    assert proc.returncode == 70
    assert "internal error: ZeroDivisionError: boom" in proc.stderr
    assert "TCM_DEBUG=1" in proc.stderr
    assert ("Traceback" in proc.stderr) is debug


def test_interrupt_is_one_line_and_exit_130():
    code = BUG.replace('raise ZeroDivisionError("boom")', "raise KeyboardInterrupt")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 130 and "interrupted" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_exit_code_table_is_in_help(tcm):
    text = tcm("--help").stdout
    for code in ("1 the command's check failed", "2 usage", "3 image or registry", "4 cache"):
        assert code in " ".join(text.split()), text
    assert Path(REPO / "README.md").read_text().count("| 5 |") == 1
