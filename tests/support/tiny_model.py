"""A two-layer MLP under torch.compile on the CPU: a real Inductor cache (FX graph,
AOTAutograd, generated C++), made in a fresh process. Prints Inductor's own counters as JSON,
which say whether its caches hit.

    TORCHINDUCTOR_CACHE_DIR=DIR python -m tests.support.tiny_model
"""

from __future__ import annotations

import json
import time
import warnings


def main() -> None:
    warnings.filterwarnings("ignore")
    import torch
    from torch._dynamo.utils import counters

    class MLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(64, 128)
            self.b = torch.nn.Linear(128, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.relu(self.a(x)))

    torch.manual_seed(0)
    compiled = torch.compile(MLP())
    t0 = time.perf_counter()
    with torch.no_grad():
        compiled(torch.randn(4, 64))
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - t0,
                "inductor": dict(counters["inductor"]),
                "aot_autograd": dict(counters["aot_autograd"]),
            }
        )
    )


if __name__ == "__main__":
    main()
