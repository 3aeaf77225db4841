"""Launch a kernel set for real on the GPU, as a workload would (autotuned kernels autotune),
checking nothing but that it runs: the counterpart of ``tcm warm --backend triton``.

    python -m tcmtasks.warm.run_kernelset examples/kernels/tutorials.py
"""

from __future__ import annotations

import json
import sys
import time


def main(path: str) -> None:
    import torch

    from ..resources import kernel_set
    from .kernelset import Tensor, load
    from .standin import DTYPES

    t0 = time.perf_counter()
    launches = load(kernel_set(path))
    for launch in launches:
        args = []
        for a in launch.args:
            if isinstance(a, Tensor):
                dtype = getattr(torch, DTYPES[a.dtype.lower().removeprefix("torch.")])
                shape = (a.shape,) if isinstance(a.shape, int) else a.shape
                args.append(torch.randn(shape, device="cuda").to(dtype))
            else:
                args.append(a)
        launch.kernel[launch.grid](*args, **launch.meta)
    torch.cuda.synchronize()
    print(json.dumps({"launches": len(launches), "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main(sys.argv[1])
