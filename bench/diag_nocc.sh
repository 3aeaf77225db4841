#!/usr/bin/env bash
# Diagnose a helper lookup on the GPU machine: where Triton looks for cuda_utils, and what is there.
. "$(dirname "$0")/gpu_env.sh" "$1"
h=$(mktemp -d); mkdir -p $h/bin; ln -s $(command -v python3) $h/bin/python3
python3 -m tcmtasks.cli extract oci:.device/nocc/image:with-helpers -c $h/cache 2>&1 | tail -2
py=$(command -v python3)
env -u CC -u CXX HOME=$h PATH=$h/bin TRITON_CACHE_DIR=$h/cache $py - <<'PY'
import hashlib, os, sysconfig
from pathlib import Path
from triton.runtime.build import platform_key
from triton.runtime.cache import get_cache_manager
from triton import knobs
import triton.backends.nvidia.driver as d
src = Path(os.path.join(d.dirname, "driver.c")).read_text()
key = hashlib.sha256((src + platform_key()).encode()).hexdigest()
m = get_cache_manager(key)
name = "cuda_utils" + sysconfig.get_config_var("EXT_SUFFIX")
print("env", os.environ.get("TRITON_CACHE_DIR"), "knobs", knobs.cache.dir, "manager dir", m.cache_dir)
print("get_file", m.get_file(name))
print("listing", sorted(os.listdir(os.environ["TRITON_CACHE_DIR"]))[:40])
try:
    d.CudaUtils()
    print("CudaUtils loaded")
except Exception as e:
    print("CudaUtils failed:", type(e).__name__, str(e)[:300])
PY
