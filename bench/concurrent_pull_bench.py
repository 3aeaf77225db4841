"""N pods pulling one image at once from a local registry: into their own dirs, and into one
shared dir (pods of a node sharing a hostPath cache).

    python bench/concurrent_pull_bench.py [--entries 400] [--pods 1,8,32,64]

Debian's ``docker-registry`` runs on 127.0.0.1; the image is a cache of --entries real entries
(copies of kernels compiled on the CPU), pushed once. For each N, N ``tcm pull --all`` start
together (each its own process, HOME and index); printed per N and mode: wall time until the
last one ends, failures (exit status != 0), the largest peak RSS, and the bytes the pulls wrote
(``write_bytes`` of /proc/PID/io, summed). Shared mode checks that the tree equals a single
pull's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_bench import build  # noqa: E402

TCM = [sys.executable, "-m", "tcmtasks.cli"]
# peak RSS and the bytes written, reported by the pull's own process when it exits
PROBE = (
    "import atexit, resource, sys, runpy\n"
    "out = sys.argv.pop(1)\n"
    "def report():\n"
    "    io = dict(l.split(': ') for l in open('/proc/self/io').read().splitlines())\n"
    "    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "    open(out, 'w').write(f\"{rss} {io['write_bytes']}\")\n"
    "atexit.register(report)\n"
    "runpy.run_module('tcmtasks.cli', run_name='__main__', alter_sys=True)\n"
)


def registry(base: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (base / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {base / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(base / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    return proc, f"127.0.0.1:{port}"


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".tcm")}  # fmt: skip


def run(n: int, ref: str, host: str, w: Path, shared: bool) -> dict:
    """N pulls started together; their figures."""
    procs = []
    for i in range(n):
        home = w / f"home{i}"
        home.mkdir(parents=True)
        dest = w / "shared" if shared else w / f"node{i}"
        env = {**os.environ, "HOME": str(home), "TCM_DB": str(home / "index.db"),
               "PYTHONPATH": str(REPO)}  # fmt: skip
        cmd = [sys.executable, "-c", PROBE, str(home / "probe"), "pull", ref, "--all", "-c",
               str(dest), "--insecure-host", host]  # fmt: skip
        procs.append((subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True), home))  # fmt: skip
    t = time.perf_counter()
    failures, rss, written, errors = 0, 0, 0, []
    for p, home in procs:
        _out, err = p.communicate()
        if p.returncode:
            failures += 1
            errors.append(err.strip().splitlines()[-1] if err.strip() else str(p.returncode))
            continue
        kib, wrote = (home / "probe").read_text().split()
        rss, written = max(rss, int(kib)), written + int(wrote)
    return {"pods": n, "mode": "shared" if shared else "own", "wall_s": time.perf_counter() - t,
            "failures": failures, "max_rss_mb": rss / 1024, "written_mb": written / 2**20,
            "errors": sorted(set(errors))[:3]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=400)
    ap.add_argument("--pods", default="1,8,32,64")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tcm-pods")
    args = ap.parse_args()
    w = args.workdir
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    cache = build(w, args.entries, "copies", copy=True)
    reg_proc, host = registry(w)
    try:
        ref = f"docker://{host}/tcm/pods:v1"
        env = {**os.environ, "PYTHONPATH": str(REPO), "TCM_DB": str(w / "push.db")}
        subprocess.run([*TCM, "package", str(cache), ref, "--insecure-host", host], env=env,
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        size = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
        print(f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}; "
              f"{args.entries} entries, {size / 2**20:.1f} MiB", flush=True)  # fmt: skip
        rows = []
        single = None
        for n in (int(x) for x in args.pods.split(",")):
            for shared in (False, True):
                d = w / f"run-{n}-{'shared' if shared else 'own'}"
                os.sync()
                time.sleep(2)
                row = run(n, ref, host, d, shared)
                if shared:
                    got = tree(d / "shared")
                    single = single or tree(w / "run-1-own" / "node0")
                    # (groups hold the dir's absolute path: compare with it written the same)
                    here, there = str(d / "shared").encode(), str(w / "run-1-own" / "node0")
                    row["tree_equals_single_pull"] = {
                        k: v.replace(here, there.encode()) for k, v in got.items()
                    } == single
                rows.append(row)
                print(f"  {n:3d} pods, {row['mode']:6s}: {row['wall_s']:6.2f} s, "
                      f"{row['failures']} failed, max RSS {row['max_rss_mb']:5.1f} MB, wrote "
                      f"{row['written_mb']:7.1f} MiB"
                      + (f", tree as one pull's: {row['tree_equals_single_pull']}"
                         if shared else "") + (f"  {row['errors']}" if row["errors"] else ""),
                      flush=True)  # fmt: skip
                shutil.rmtree(d, ignore_errors=True) if n > 1 else None
        print(json.dumps(rows))
    finally:
        reg_proc.terminate()
        reg_proc.wait(10)


if __name__ == "__main__":
    main()
