"""Ask Triton's own driver for its C helpers, as a first launch does, in a process that cannot
compile C (run it with ``CC=/bin/false``): each answer says whether Triton found the helper in
``TRITON_CACHE_DIR`` or missed it. Found: Triton's ``compile_module_from_src`` read it from the
cache and failed only to load it (no driver here), which it logs ("compiled module ... could
not be loaded") before falling back to a build; missed: it went straight to the build.

    TRITON_CACHE_DIR=... CC=/bin/false python -m tests.support.helper_lookups KERNELSET cuda:90

KERNELSET ``none`` asks for ``cuda_utils`` alone (what a torch.compile node looks up first).
``TCM_TEST_LIBCUDA_DIRS`` (dirs joined by ``:``) is what Triton's ``libcuda_dirs()`` answers,
as on a node whose ldconfig lists those dirs.
"""

import json
import logging
import subprocess
import sys

from tcmtasks.targets import Target
from tcmtasks.warm.kernelset import expand, load
from tcmtasks.warm.standin import target_active, warmup
from tcmtasks.warm.triton_backend import standin_args


class Seen(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


SEEN = Seen()
logging.getLogger("triton.runtime.build").addHandler(SEEN)


def outcome(build) -> str:
    SEEN.messages.clear()
    try:
        build()
    except (ImportError, subprocess.CalledProcessError, RuntimeError):
        pass
    else:
        return "loaded"
    return "found" if any("could not be loaded" in m for m in SEEN.messages) else "missed"


def main(kernelset, target):
    import os

    from triton.backends.nvidia import driver

    if os.environ.get("TCM_TEST_LIBCUDA_DIRS"):
        dirs = os.environ["TCM_TEST_LIBCUDA_DIRS"].split(":")
        driver.libcuda_dirs = lambda: list(dirs)

    results = {"cuda_utils": outcome(driver.CudaUtils)}
    if kernelset == "none":
        print(json.dumps(results))
        return
    with target_active(Target.parse(target)):
        for launch in load(kernelset):
            for v in expand(launch):
                ck = warmup(v.fn, *standin_args(v.args), grid=v.grid, **v.kwargs)
                results[f"{v.name} {ck.hash[:8]}"] = outcome(
                    lambda ck=ck: driver.CudaLauncher(ck.src, ck.metadata)
                )
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
