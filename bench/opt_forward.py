"""OPT-125m (fp16, random weights from tcmtasks/data/models/opt-125m) under torch.compile:
time the first forward of a fresh process and print Inductor's own counters as JSON.

    TORCHINDUCTOR_CACHE_DIR=DIR python bench/opt_forward.py [--mega-save F | --mega-load F]

--mega-save writes PyTorch's Mega-Cache (torch.compiler.save_cache_artifacts) after the
forward; --mega-load loads one before compiling: the baseline tcm is compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

CONFIG = Path(__file__).resolve().parent.parent / "tcmtasks" / "data" / "models" / "opt-125m"


def hit_both(result: dict) -> bool:
    """Whether a forward's counters (this script's JSON) show the FX-graph and AOTAutograd
    caches hit with no miss: the restored runs of the GPU proofs."""
    inductor, aot = result["inductor"], result["aot_autograd"]
    return (
        inductor.get("fxgraph_cache_hit", 0) >= 1
        and not inductor.get("fxgraph_cache_miss")
        and aot.get("autograd_cache_hit", 0) >= 1
        and not aot.get("autograd_cache_miss")
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mega-save", type=Path)
    ap.add_argument("--mega-load", type=Path)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--json-out", type=Path, help="also write the result there")
    ap.add_argument("--device", default=os.environ.get("TCM_BENCH_DEVICE", "cuda"))
    ap.add_argument("--model", type=Path, default=CONFIG, help="a dir with config.json")
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16"], help="on the GPU")
    ap.add_argument("--dynamic", action="store_true", help="torch.compile(dynamic=True)")
    ap.add_argument("--then", default="",
                    help="BxS,BxS...: more calls after the first, in this order (the counters "
                    "cover them all)")  # fmt: skip
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()
    import torch
    import transformers
    from torch._dynamo.utils import counters

    if args.mega_load:
        torch.compiler.load_cache_artifacts(args.mega_load.read_bytes())
    cfg = transformers.AutoConfig.from_pretrained(str(args.model))
    torch.manual_seed(0)
    dev = args.device  # cpu: a smoke test of this script where there is no GPU
    on_gpu = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    dtype = on_gpu if dev == "cuda" else torch.float32
    model = transformers.AutoModelForCausalLM.from_config(cfg).to(dev, dtype).eval()
    compiled = torch.compile(model, dynamic=True if args.dynamic else None)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=dev)
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    with torch.no_grad():
        compiled(input_ids=ids)
    sync()
    first = time.perf_counter() - t
    for shape in filter(None, args.then.split(",")):
        b, s_len = (int(x) for x in shape.split("x"))
        with torch.no_grad():
            compiled(input_ids=torch.randint(0, cfg.vocab_size, (b, s_len), device=dev))
    sync()
    if args.mega_save:
        saved = torch.compiler.save_cache_artifacts()
        if saved is not None:
            args.mega_save.write_bytes(saved[0])
    result = json.dumps(
        {
            "first_forward_s": first,
            "since_start_s": time.perf_counter() - t_start,
            "inductor": {
                k: v for k, v in counters["inductor"].items() if "cache" in k or "bundler" in k
            },
            "aot_autograd": dict(counters["aot_autograd"]),
        }
    )
    print(result, flush=True)
    if args.json_out:
        args.json_out.write_text(result)


if __name__ == "__main__":
    main()
