#!/usr/bin/env bash
# Why do a CPU runner's graph keys differ from the GPU machine's (bench/RESULTS.md, fleet run 1)?
# One call on the GPU machine:  bash bench/gpu_session_keydiff.sh OUTDIR
# It warms OPT-125m natively and GPU-less for both shipped profiles with TORCH_TRACE and the
# hashed graph modules dumped (bench/keydump), and returns each run's key components
# (bench/trace_components.py), the graph dumps, the interpreter and its packages. On the CPU
# runner, make the same with
#   TCM_DUMP_GM=D PYTHONPATH=bench/keydump TORCH_TRACE=D/trace tcm warm --backend torch \
#       --model opt-125m --gpu-profile nvidia-h100 -o W; python bench/trace_components.py D/trace
# and diff the component lines: the one whose hash differs is the cause.
. "$(dirname "$0")/gpu_env.sh" "$1"
export TCM_DB=/tmp/kdb
for m in native h100 h200; do
    mkdir -p /tmp/kd/$m
    a=""; [ "$m" != native ] && a="--gpu-profile nvidia-$m"
    TCM_DUMP_GM=/tmp/kd/$m PYTHONPATH=$PWD/bench/keydump:$PYTHONPATH TORCH_TRACE=/tmp/kd/$m/trace \
        python3 -m tcmtasks.cli warm --backend torch --model opt-125m $a -o /tmp/w/$m | head -1
    python3 bench/trace_components.py /tmp/kd/$m/trace > /tmp/kd/$m/comp.txt
    rm -rf /tmp/kd/$m/trace
done
(python3 -c 'import sys, torch; print(sys.version, torch.cuda.get_device_name())'; env | sort
 python3 -m pip freeze) > /tmp/kd/env.txt
tar czf "$out/kd.tgz" -C /tmp kd
ls -la "$out"
