"""One process: tiny-opt under torch.compile on the CPU (the CPU torch build, no GPU), called
with the given shapes in order; prints Inductor's FX-graph and AOTAutograd cache counters after
each call. What docs/cache-formats.md ("Which graphs a process compiles when shapes vary")
measured with it:

    export TORCHINDUCTOR_CACHE_DIR=/tmp/pairs
    python bench/shape_order_check.py 1x32,2x64      # the warm: one process per ordered pair
    python bench/shape_order_check.py 2x64,1x32
    python bench/shape_order_check.py 2x64,1x32,4x16 # a node: every lookup hits
    python bench/shape_order_check.py 4x16,2x64,1x32 # 4x16 first: its static graph misses

``dynamic`` as a second argument compiles with ``torch.compile(dynamic=True)``, ``mark`` marks
both dims of the input dynamic.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import transformers
from torch._dynamo.utils import counters

CONFIG = Path(__file__).resolve().parent.parent / "tcmtasks" / "data" / "models" / "tiny-opt"


def main() -> None:
    shapes = [tuple(int(x) for x in s.split("x")) for s in sys.argv[1].split(",")]
    mode = sys.argv[2] if len(sys.argv) > 2 else "default"
    torch.manual_seed(0)
    cfg = transformers.AutoConfig.from_pretrained(str(CONFIG))
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    compiled = torch.compile(model, dynamic=True if mode == "dynamic" else None)
    out = []
    for b, s in shapes:
        counters.clear()
        ids = torch.randint(0, cfg.vocab_size, (b, s))
        if mode == "mark":
            torch._dynamo.mark_dynamic(ids, 0)
            torch._dynamo.mark_dynamic(ids, 1)
        with torch.no_grad():
            compiled(input_ids=ids)
        ind, aot = dict(counters["inductor"]), dict(counters["aot_autograd"])
        out.append({"shape": f"{b}x{s}", "fx_hit": ind.get("fxgraph_cache_hit", 0),
                    "fx_miss": ind.get("fxgraph_cache_miss", 0),
                    "aot_hit": aot.get("autograd_cache_hit", 0),
                    "aot_miss": aot.get("autograd_cache_miss", 0)})  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
