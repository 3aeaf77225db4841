"""The FX-graph and AOTAutograd cache key components a run logged (``TORCH_TRACE``), one line
each (``[hash] name: start of value``), to diff two machines' keys:

    python bench/trace_components.py TRACE_DIR > components.txt
"""

from __future__ import annotations

import glob
import json
import os
import sys

NAMES = ("fx_graph_cache_miss", "fx_graph_cache_hit", "aotautograd_cache_miss",
         "aotautograd_cache_hit")  # fmt: skip


def components(trace_dir: str) -> list[str]:
    out = []
    for path in sorted(glob.glob(os.path.join(trace_dir, "*.log"))):
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        for i, line in enumerate(lines):
            if not any(f'"name": "{n}"' in line for n in NAMES) or '"has_payload"' not in line:
                continue
            payload = []
            for nxt in lines[i + 1 :]:
                if not nxt.startswith("\t"):
                    break
                payload.append(nxt[1:])
            data = json.loads("\n".join(payload))
            name = json.loads(line[line.index("{") :])["artifact"]["name"]
            out.append(f"## {name} {data.get('key')}")
            out += [c.replace("\n", "\\n")[:300] for c in data.get("components", [])]
    return out


if __name__ == "__main__":
    print("\n".join(components(sys.argv[1])))
