"""Bench-only (bench/gpu_proof_gpuless.py --keys-only): with TCM_DUMP_GM=DIR, every graph
Inductor hashes for its FX-graph key is also written there as a pickletools listing, so
that two compiles whose keys differ can be diffed byte for byte."""

import os

if os.environ.get("TCM_DUMP_GM"):
    import io
    import itertools
    import pickletools

    _n = itertools.count()

    def _install() -> None:
        import torch.fx
        from torch._inductor import codecache

        orig = codecache.FxGraphCachePickler.get_hash

        def get_hash(self, obj):  # type: ignore[no-untyped-def]
            if isinstance(obj, torch.fx.GraphModule):
                out = io.StringIO()
                pickletools.dis(self.dumps(obj), out=out)
                path = os.path.join(os.environ["TCM_DUMP_GM"], f"gm{next(_n)}.txt")
                with open(path, "w") as f:
                    f.write(out.getvalue())
            return orig(self, obj)

        codecache.FxGraphCachePickler.get_hash = get_hash

    import importlib.abc
    import sys

    class _Hook(importlib.abc.MetaPathFinder):
        """Patch once torch._inductor.codecache is imported (not before: torch is slow)."""

        def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
            if name == "torch._inductor.codecache":
                sys.meta_path.remove(self)
                spec = importlib.util.find_spec(name)
                loader = spec.loader
                exec_module = loader.exec_module

                def run(module):  # type: ignore[no-untyped-def]
                    exec_module(module)
                    _install()

                loader.exec_module = run
                return spec
            return None

    import importlib.util

    sys.meta_path.insert(0, _Hook())
