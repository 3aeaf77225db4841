"""Triton compiles in worker processes that leave the way Inductor's workers do: a
multiprocessing child that ends with ``os._exit(0)``, and a pool that is ``terminate()``d right
after its results arrive. Run under ``tcm track``: every compile must be counted.

    python -m tests.support.worker_compiles   # 3 compiles for cuda:90, one per process
"""

import multiprocessing as mp
import os
import sys

from tcmtasks.targets import Target
from tcmtasks.warm.standin import TensorStandIn, target_active, warmup
from tests.support.kernels import launches


def compile_one(i: int) -> str:
    kernel, args, meta = launches(TensorStandIn)[i]
    with target_active(Target.parse("cuda:90")):
        return str(warmup(kernel, *args, **meta).hash)


def child_then_exit(i: int) -> None:
    compile_one(i)
    os._exit(0)  # no atexit handlers, no flush of anything held in memory


def main() -> None:
    ctx = mp.get_context(sys.argv[1] if len(sys.argv) > 1 else "spawn")
    p = ctx.Process(target=child_then_exit, args=(0,))
    p.start()
    p.join()
    assert p.exitcode == 0
    pool = ctx.Pool(2)
    hashes = pool.map(compile_one, [1, 2])
    pool.terminate()  # SIGTERM to the workers: they do not exit cleanly either
    pool.join()
    print(len(hashes) + 1)


if __name__ == "__main__":
    main()
