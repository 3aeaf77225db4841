"""A workload's own warm-up script, as a user writes one (issue 28's GPU proof): the model
from a local dir with ``from_pretrained``, on the GPU in fp16, ``torch.compile``, calls under
``no_grad`` with the batch dim marked dynamic. Prints Inductor's counters as JSON.

    python bench/warmup_script.py MODEL_DIR --shapes 2x128,8x128 [--mark batch]
    python bench/warmup_script.py MODEL_DIR --save-from tcmtasks/data/models/opt-125m

``--save-from CONFIG_DIR`` first writes a model with random weights there (fp16).
"""

from __future__ import annotations

import argparse
import json

import torch
import transformers
from torch._dynamo.utils import counters

DIMS = {"batch": 0, "seq": 1}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--shapes", default="1x128")
    ap.add_argument("--mark", default="", help="batch,seq: dims to mark dynamic")
    ap.add_argument("--save-from", help="a dir with config.json: save a random model first")
    a = ap.parse_args()
    if a.save_from:
        cfg = transformers.AutoConfig.from_pretrained(a.save_from)
        transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float16).save_pretrained(
            a.model
        )
        return
    model = transformers.AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float16)
    model = model.to("cuda")
    compiled = torch.compile(model)
    for shape in a.shapes.split(","):
        b, s = (int(x) for x in shape.split("x"))
        ids = torch.randint(0, 1000, (b, s), device="cuda")
        for dim in filter(None, a.mark.split(",")):
            torch._dynamo.mark_dynamic(ids, DIMS[dim])
        with torch.no_grad():
            compiled(input_ids=ids)
        torch.cuda.synchronize()
    print(json.dumps({k: dict(v) for k, v in counters.items()
                      if k in ("inductor", "aot_autograd")}))  # fmt: skip


if __name__ == "__main__":
    main()
