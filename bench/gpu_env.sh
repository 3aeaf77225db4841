# Sourced by the bench/gpu_session_*.sh scripts on the GPU machine: OUTDIR in $out, and tcm's
# dependencies that machine lacks (carried as wheels in .whl/) importable with tcm itself.
# The wheels (cp312; that machine has rich, pyyaml, click, attrs, nvidia-ml-py):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp #     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl #     typer==0.28.0 sqlite-utils==4.2.1 sqlite-fts4==1.0.3 click-default-group==1.2.4 #     doit==0.37.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 #     referencing==0.37.0 rpds-py==2026.9.1 tabulate==0.10.0 cloudpickle isal==1.9.1
set -uo pipefail
out=${1:-/tmp/out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# tools the machine lacks, carried the same way (the throughput bench's zstd CLI)
if [ -d .whl/bin ]; then export PATH=$PWD/.whl/bin:$PATH; fi
