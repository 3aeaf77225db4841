"""tcm against the plain tool on the same data, side by side in one run, as whole processes.

    python bench/throughput_bench.py [--entries 2000] [--rows 20000] [--rounds 5]

Each pair runs --rounds times, alternating (tcm, tool, tcm, tool...) so drift hits both, each
command after a ``sync`` and a 2 s pause, after one untimed run of each (tcm's first run on
a host records its Triton build, once per install); the medians of wall, user and sys time
and the wall ratio are printed, with peak RSS (all from ``/usr/bin/time``):

* extract: ``tcm extract`` of a gzip image of an --entries cache (real copies of entries
  compiled on the CPU) vs ``tar -xzf`` of the same layer blob followed by ``sync -f``: tcm's
  extract is durable (a syncfs before its entries are published), so the yardstick is too.
  Before 2026-12-06 the yardstick was a bare ``tar -xzf`` with no settle before each command,
  which let tcm's syncfs pay for tar's dirty pages: those ratios flattered tcm;
* package zstd: ``tcm package --compression zstd`` vs ``tar -c | zstd -3``;
* package gzip: ``tcm package`` vs ``tar -czf``;
* list --json: ``tcm list --json --no-refresh`` of an indexed --rows cache vs
  ``sqlite3 -json`` of the same table;
* dedup: ``tcm prune --dedup --dry-run`` of the --rows cache vs ``sha256sum`` of every binary;
* table: ``tcm list`` (the table, piped) and ``tcm list --json`` of a --table-rows cache, whose
  target is absolute (<= 0.3 s), beside ``sqlite3 -column`` of the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_bench import build  # noqa: E402

TCM = [sys.executable, "-m", "tcmtasks.cli"]


TIME = shutil.which("time", path="/usr/bin")


def run(cmd: list[str] | str, env: dict[str, str]) -> dict[str, float]:
    """Wall, user and sys seconds and peak RSS (KiB) of one process, from ``/usr/bin/time``
    (user and sys beside wall: a command that hands its work to the kernel's writeback, or to a
    second process, looks fast by wall time alone; shared FACTS 33)."""
    if TIME is None:
        raise SystemExit("this bench needs /usr/bin/time (apt install time)")
    shell = isinstance(cmd, str)
    fmt = "%e %U %S %M"
    wrapped = (
        f"/usr/bin/time -f '{fmt}' -o {env['TIME_OUT']} sh -c {json.dumps(cmd)}"
        if shell
        else ["/usr/bin/time", "-f", fmt, "-o", env["TIME_OUT"], *cmd]
    )
    t = time.perf_counter()
    proc = subprocess.run(
        wrapped, shell=shell, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    secs = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{cmd} failed:\n{proc.stderr[-2000:]}")
    _wall, user, sys_s, rss = Path(env["TIME_OUT"]).read_text().split()[-4:]
    return {"wall": secs, "user": float(user), "sys": float(sys_s), "rss": int(rss)}


def settle() -> None:
    """Before each timed command: write back every dirty page and let the disk go quiet, so
    that no command pays for the one before it (a ``syncfs`` waits for all of them)."""
    os.sync()
    time.sleep(2)


def pair(name: str, ours, theirs, rounds: int, setup=None) -> dict:
    """Alternate ours and theirs ``rounds`` times, each after ``setup`` and a settle."""
    runs: dict[str, list[dict[str, float]]] = {"tcm": [], "tool": []}
    for fn in (ours, theirs):  # untimed: a first run also records the host's Triton build
        if setup:
            setup()
        fn()
    for _ in range(rounds):
        for fn, who in ((ours, "tcm"), (theirs, "tool")):
            if setup:
                setup()
            settle()
            runs[who].append(fn())

    def med(who: str, what: str) -> float:
        return statistics.median(r[what] for r in runs[who])

    row = {"name": name, "ratio": med("tcm", "wall") / med("tool", "wall")}
    for who in ("tcm", "tool"):
        row.update({f"{who}_{k}": med(who, k) for k in ("wall", "user", "sys")})
        row[f"{who}_rss_mb"] = max(r["rss"] for r in runs[who]) / 1024
        row[f"{who}_walls"] = [round(r["wall"], 2) for r in runs[who]]
    print(
        f"  {name:<14} tcm {row['tcm_wall']:6.2f} s (user {row['tcm_user']:5.2f}, sys "
        f"{row['tcm_sys']:5.2f})  tool {row['tool_wall']:6.2f} s (user {row['tool_user']:5.2f}, "
        f"sys {row['tool_sys']:5.2f})  ratio {row['ratio']:5.2f}x   RSS tcm "
        f"{row['tcm_rss_mb']:6.1f} MB, tool {row['tool_rss_mb']:6.1f} MB",
        flush=True,
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/tcm-throughput"))
    ap.add_argument("--table-rows", type=int, default=10000)
    ap.add_argument("--only", default="extract,zstd,gzip,list,dedup,table")
    args = ap.parse_args()
    w = args.workdir
    w.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "TCM_DB": str(w / "index.db"),
           "TIME_OUT": str(w / "time.out"), "HOME": str(w)}  # fmt: skip
    # tcm as installed: pip compiles an installed package's bytecode, while this checkout's
    # may be missing, or never written (PYTHONDONTWRITEBYTECODE, set on these machines),
    # which makes every run compile tcm's ~60 modules from source (~80 ms of an extract)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "tcmtasks")],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    cache = build(w, args.entries, "copies", copy=True)
    files = sum(len(fs) for _d, _s, fs in os.walk(cache))
    size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{args.entries} entries, {files} files, {size / 1e6:.0f} MB; {args.rounds} rounds",
        flush=True,
    )
    rows = []
    only = args.only.split(",")
    image = w / "img"
    if not image.exists():
        subprocess.run([*TCM, "package", str(cache), f"oci:{image}:v1"], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
    blobs = image / "blobs" / "sha256"
    top = json.loads((image / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((blobs / top.split(":")[1]).read_text())
    layer = blobs / manifest["layers"][0]["digest"].split(":")[1]
    node_a, node_b = w / "node-tcm", w / "node-tar"

    def clean_nodes() -> None:
        for d in (node_a, node_b):
            shutil.rmtree(d, ignore_errors=True)
        node_b.mkdir()

    if "extract" in only:
        rows.append(pair(
            "extract",
            lambda: run([*TCM, "extract", f"oci:{image}:v1", "--all", "-c", str(node_a)], env),
            # durable against durable: tcm's extract ends with a syncfs of the cache's
            # file system before its entries are published
            lambda: run(f"tar -xzf {layer} -C {node_b} && sync -f {node_b}", env),
            args.rounds, clean_nodes,
        ))  # fmt: skip
    out_a, out_b = w / "pkg-tcm", w / "pkg-tool.tar"

    def clean_pkgs() -> None:
        shutil.rmtree(out_a, ignore_errors=True)
        out_b.unlink(missing_ok=True)

    if "zstd" in only:
        rows.append(pair(
            "package zstd",
            lambda: run([*TCM, "package", str(cache), f"oci:{out_a}:v1", "--compression",
                         "zstd"], env),
            lambda: run(f"tar -c -C {cache} . | zstd -3 -q -o {out_b}", env),
            args.rounds, clean_pkgs,
        ))  # fmt: skip
    if "gzip" in only:
        rows.append(pair(
            "package gzip",
            lambda: run([*TCM, "package", str(cache), f"oci:{out_a}:v1"], env),
            lambda: run(["tar", "-czf", str(out_b), "-C", str(cache), "."], env),
            args.rounds, clean_pkgs,
        ))  # fmt: skip
    if "list" in only or "dedup" in only:
        big = build(w, args.rows)
        subprocess.run([*TCM, "index", "-c", str(big)], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        if "list" in only:
            rows.append(pair(
                "list --json",
                lambda: run([*TCM, "list", "-c", str(big), "--json", "--no-refresh"], env),
                lambda: run(["sqlite3", "-json", env["TCM_DB"], "SELECT * FROM entries"], env),
                args.rounds,
            ))  # fmt: skip
        if "dedup" in only:
            rows.append(pair(
                "dedup dry-run",
                lambda: run([*TCM, "prune", "-c", str(big), "--dedup", "--dry-run", "--json"],
                            env),
                lambda: run(f"find {big} -name '*.cubin' -o -name '*.hsaco' | xargs sha256sum",
                            env),
                args.rounds,
            ))  # fmt: skip
    if "table" in only:
        small = build(w, args.table_rows)
        subprocess.run([*TCM, "index", "-c", str(small)], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        sql = "SELECT e.key, e.name, e.backend, e.arch, e.size, e.mtime, e.lookup FROM entries e "
        sql += f"JOIN roots r ON r.id = e.root_id WHERE r.path = '{small}' ORDER BY e.name"
        for label, extra in (("list table", []), ("list --json", ["--json"])):
            rows.append(pair(
                f"{label} {args.table_rows // 1000}k",
                lambda extra=extra: run(
                    [*TCM, "list", "-c", str(small), "--no-refresh", *extra], env),
                lambda: run(["sqlite3", "-column", env["TCM_DB"], sql], env),
                args.rounds,
            ))  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
