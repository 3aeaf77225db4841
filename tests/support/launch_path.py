"""Compile a kernel set through the ordinary launch path, ``kernel[grid](*args, **meta)``,
under a stand-in driver: the JIT binds, specialises, computes the key and compiles exactly as at
a real launch; only the launch itself, after the compile, fails (there is no GPU).

    TRITON_CACHE_DIR=... python -m tests.support.launch_path KERNELSET TARGET
"""

import sys

from tcmtasks.targets import Target
from tcmtasks.warm.kernelset import expand, load
from tcmtasks.warm.standin import target_active
from tcmtasks.warm.triton_backend import standin_args


def main(kernelset, target):
    with target_active(Target.parse(target)):
        for launch in load(kernelset):
            for v in expand(launch):
                args = standin_args(v.args)
                v.fn.device_caches.clear()
                try:
                    v.fn[v.grid](*args, **v.kwargs)  # the launch a workload makes
                except (AttributeError, RuntimeError, TypeError) as exc:
                    print(f"launched past the compile: {exc.__class__.__name__}", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
