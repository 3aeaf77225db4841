"""Package a ~1 GB cache beside ``tar -czf``, then push and pull it through a local registry.

    python bench/package_bench.py [--entries 20000]

The cache is index_bench's synthetic one (20,000 cloned real entries, ~0.9 GB), with real file
copies rather than hard links. Packaging
(gzip level 6, as tar's default) is timed in-process against ``tar -czf`` of the same dir in
the same run; push and pull go to a docker-registry started on 127.0.0.1; the last figure is a
second push of the unchanged image (every blob already there).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_bench import REPO, build

sys.path.insert(0, str(REPO))
from tcmtasks import scan_root
from tcmtasks.oci.image import MT_MANIFEST, package
from tcmtasks.oci.layout import OciLayout
from tcmtasks.oci.registry import Registry, RegistryImage
from tcmtasks.oci.transfer import copy_image


def start_registry(work: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = work / "registry.yml"
    cfg.write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {work / 'registry'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"127.0.0.1:{port}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=20000)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tcm-bench")
    args = ap.parse_args()
    # real copies: tar stores hard-linked files once, which would make it look 200x faster
    cache = args.workdir / f"copied-{args.entries}"
    if not cache.exists() or sum(1 for _ in os.scandir(cache)) != args.entries:
        cache = build(args.workdir, args.entries, f"copied-{args.entries}", copy=True)
    work = args.workdir / "package-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    entries = list(scan_root(cache))
    size = sum(e.size for e in entries)
    os.sync()
    # warm the page cache equally for both
    subprocess.run(f"tar -cf - -C {cache} . > /dev/null", shell=True, check=True)

    t = time.perf_counter()
    subprocess.run(["tar", "-czf", str(work / "cache.tgz"), "-C", str(cache), "."], check=True)
    tar_s = time.perf_counter() - t
    tar_bytes = (work / "cache.tgz").stat().st_size

    t = time.perf_counter()
    store = OciLayout(work / "img", "v1", create=True)
    built = package(entries, store, compression="gzip", level=6)
    store.put_manifest(built.manifest, MT_MANIFEST)
    tcm_s = time.perf_counter() - t

    proc, host = start_registry(work)
    try:
        reg = Registry(host, insecure=True)
        t = time.perf_counter()
        copy_image(store, RegistryImage(reg, "bench/cache", "v1"))
        push_s = time.perf_counter() - t
        t = time.perf_counter()
        pulled = OciLayout(work / "pulled", "v1", create=True)
        copy_image(RegistryImage(reg, "bench/cache", "v1"), pulled)
        pull_s = time.perf_counter() - t
        t = time.perf_counter()
        again = copy_image(store, RegistryImage(Registry(host, insecure=True), "bench/cache", "v1"))
        repush_s = time.perf_counter() - t
        assert again.copied == 0
    finally:
        proc.terminate()
    mb = built.layer.size / 1e6
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cpus, Python "
        f"{platform.python_version()}; cache {len(entries)} entries, {size / 1e9:.2f} GB"
    )
    print(f"  tar -czf              {tar_s:7.2f} s  ({tar_bytes / 1e6:.0f} MB)")
    print(
        f"  tcm package (gzip-6)  {tcm_s:7.2f} s  ({mb:.0f} MB layer)   speed vs tar: "
        f"{tar_s / tcm_s:.2f}x"
    )
    print(f"  push to registry      {push_s:7.2f} s  ({mb / push_s:.0f} MB/s)")
    print(f"  pull from registry    {pull_s:7.2f} s  ({mb / pull_s:.0f} MB/s)")
    print(f"  push again, unchanged {repush_s:7.3f} s  (0 blobs sent)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
