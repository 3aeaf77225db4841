"""Compile tests/support/kernels.py into $TRITON_CACHE_DIR, in a fresh process.

    python -m tests.support.compile_kernels cuda:90 [cuda:80 ...]   # stand-in driver, no GPU

Each target compiles through the JIT launch path (tcmtasks.warm.standin), so the entries carry
the keys a real launch on that GPU would look up. Prints one JSON line per kernel.
"""

import json
import sys

from tcmtasks.targets import Target
from tcmtasks.warm.standin import TensorStandIn, target_active, warmup
from tests.support.kernels import launches


def main(argv):
    for text in argv:
        target = Target.parse(text)
        with target_active(target):
            for kernel, args, meta in launches(TensorStandIn):
                compiled = warmup(kernel, *args, **meta)
                print(
                    json.dumps(
                        {"target": str(target), "name": compiled.name, "hash": compiled.hash}
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main(sys.argv[1:])
