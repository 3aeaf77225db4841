# Sourced by the bench/gpu_session_*.sh scripts on the GPU machine: OUTDIR in $out, and tcm's
# dependencies that machine lacks (carried as wheels in .whl/) importable with tcm itself.
set -uo pipefail
out=${1:-/tmp/out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# tools the machine lacks, carried the same way (the throughput bench's zstd CLI)
if [ -d .whl/bin ]; then export PATH=$PWD/.whl/bin:$PATH; fi
