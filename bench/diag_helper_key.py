import hashlib
import os
from pathlib import Path

import triton
import triton.backends.nvidia.driver as d
from triton.runtime.build import platform_key

src = Path(os.path.join(d.dirname, "driver.c")).read_text()
print("driver.c", hashlib.sha256(src.encode()).hexdigest()[:16], len(src))
print("platform_key", platform_key())
print("key", hashlib.sha256((src + platform_key()).encode()).hexdigest())
print("triton", triton.__file__, triton.__version__)
print({k: v for k, v in os.environ.items() if k.startswith(("TRITON", "CC", "CXX"))})
h = hashlib.sha256()
for p in sorted(Path(d.dirname).rglob("*")):
    if p.is_file() and p.suffix in (".c", ".h", ".py"):
        h.update(p.read_bytes())
print("nvidia backend sources", h.hexdigest()[:16])
