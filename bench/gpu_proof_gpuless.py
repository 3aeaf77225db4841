"""GPU proof for warming without a GPU (issue: GPU-less torch warm).

    PYTHONPATH=. python bench/gpu_proof_gpuless.py [--workdir /tmp/tcm-gpuless] [--rounds 3]

On the GPU machine, through ``tcmtasks.ops`` and the ``tcm`` CLI:

1. ``tcm gpu --save-profile``: the H200's profile, recorded with the GPU visible;
2. per model (tiny-opt, opt-125m; fp16, batch 1, seq 128):
   a. a local warm on the GPU (``tcm warm --backend torch``): the reference cache;
   b. the GPU-less warm: ``tcm warm --backend torch --gpu-profile`` in a private mount
      namespace with libcuda and libnvidia-ml replaced by empty files and
      ``CUDA_VISIBLE_DEVICES=`` (torch sees no driver at all);
   c. FX-graph and AOTAutograd keys of (b) against (a) (the cache dirs' entry names);
   d. (b) packaged and pulled into a fresh dir at another path, with the GPU visible;
   e. rounds of first forwards, side by side in rotated order: local warm vs restored,
      with Inductor's counters;
   f. one more restore run inside ``tcm track``: nothing may compile; the same on a copy of (a),
      the control (before tcm set torch's ptxas for its warms, a GPU warm itself left 2 kernels
      of tiny-opt to compile on every run: keyed with Triton's ptxas, looked up with torch's).

``--models`` and ``--dtypes`` (fp16, bf16) choose the runs (the model families:
``bench/gpu_session_families.sh``). Prints every figure as JSON and ``PROOF PASSED`` when,
for every model and dtype, the keys are equal,
every restored run hits the FX-graph and AOTAutograd caches with no miss, both tracked runs
compiled nothing, and the restored first forward is within 1.2x of the local warm one.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from opt_forward import hit_both  # noqa: E402 (bench/, the script's dir)

from tcmtasks import ops  # noqa: E402
from tcmtasks.resources import model_dir  # noqa: E402

FORWARD = [sys.executable, str(REPO / "bench" / "opt_forward.py")]
DRIVER_LIBS = ("libcuda.so*", "libnvidia-ml.so*")


def driver_libraries() -> list[str]:
    """Every path the CUDA driver and NVML load from: hidden from the GPU-less producer."""
    found = set()
    for d in ("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/lib/x86_64-linux-gnu",
              "/usr/lib64", "/lib/x86_64-linux-gnu"):  # fmt: skip
        for pattern in DRIVER_LIBS:
            found.update(p for p in glob.glob(os.path.join(d, pattern)) if os.path.isfile(p))
    ldconfig = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in ldconfig.splitlines():
        if ("libcuda.so" in line or "libnvidia-ml.so" in line) and "=>" in line:
            found.add(line.split("=>")[1].strip())
    return sorted(p for p in found if os.path.exists(p))


def clean_env(inductor: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TORCHINDUCTOR_", "TRITON_CACHE"))}  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    if inductor is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(inductor)
    return env


def tcm(args: list[str], env: dict[str, str], hidden: bool = False) -> dict:
    """``tcm ARGS --json``; with ``hidden`` in a mount namespace without the driver."""
    # --json is tcm's, not a warmed command's (the one after --)
    at = args.index("--") if "--" in args else len(args)
    cmd = [sys.executable, "-m", "tcmtasks.cli", *args[:at], "--json", *args[at:]]
    if hidden:
        libs = driver_libraries()
        empty = Path("/tmp/tcm-empty-lib")
        empty.write_bytes(b"")
        mounts = "".join(f"mount --bind {empty} {lib}; " for lib in libs)
        script = f"{mounts}export CUDA_VISIBLE_DEVICES=; exec " + " ".join(f"'{c}'" for c in cmd)
        cmd = ["unshare", "-m", "bash", "-c", script]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-5000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("{")][-1]
    return {**json.loads(line), "process_s": time.perf_counter() - t}


def keys(inductor: Path) -> dict[str, list[str]]:
    return {
        "fxgraph": sorted(p.name for p in inductor.glob("fxgraph/*/*") if p.is_dir()),
        "aotautograd": sorted(p.name for p in inductor.glob("aotautograd/*") if p.is_dir()),
        "cubins": sorted(p.name for p in inductor.glob("triton/*/*/*.cubin")),
        # Triton's kernel entries (a metadata .json); its driver helpers (a .so gcc builds at the
        # first launch, linked against libcuda) only a machine with the driver can hold
        "triton": sorted(p.name for p in inductor.glob("triton/*/*") if _kernel_entry(p)),
    }


def _kernel_entry(d: Path) -> bool:
    return d.is_dir() and any(not f.name.startswith("__grp__") for f in d.glob("*.json"))


def helpers(inductor: Path) -> dict[str, list[str]]:
    """Triton cache dirs that hold no kernel: name -> their files."""
    dirs = [d for d in inductor.glob("triton/*/*") if d.is_dir() and not _kernel_entry(d)]
    return {d.name: sorted(f.name for f in d.iterdir()) for d in dirs}


def triton_kernels(inductor: Path) -> dict:
    """Each Triton cache entry's kernel name and launch config, and the autotuner's choices
    (``*.best_config``): what to diff when a restored run compiles."""
    entries = {}
    for meta in inductor.glob("triton/*/*/*.json"):
        if meta.name.startswith("__grp__"):
            continue
        m = json.loads(meta.read_text())
        entries[meta.parent.name] = [m.get("name"), m.get("num_warps"), m.get("num_stages"),
                                     m.get("shared"), m.get("constants")]  # fmt: skip
    best = {str(f.relative_to(inductor)): f.read_text()[:300]
            for f in inductor.rglob("*.best_config")}  # fmt: skip
    return {"entries": dict(sorted(entries.items())), "best_configs": best}


DYNAMIC: list[str] = []  # ["--dynamic"]: warms and forwards compile with dynamic=True
#: --any-order: the warms take these (1x128 and 2x128, a process per ordered pair) and each
#: forward calls 2x128, then 1x128 and 4x128 (another order, and a shape between)
ANY_ORDER_WARM = ["--any-order", "--batch", "1,2"]
ANY_ORDER_FORWARD = ["--batch", "2", "--then", "1x128,4x128"]
ORDER: dict[str, list[str]] = {"warm": [], "forward": []}


def forward(inductor: Path, model: str, dtype: str = "fp16") -> dict:
    t = time.perf_counter()
    proc = subprocess.run([*FORWARD, "--model", str(model_dir(model)), "--dtype", dtype,
                           *DYNAMIC, *ORDER["forward"]],
                          env=clean_env(inductor), capture_output=True, text=True)  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"forward failed:\n{proc.stderr[-4000:]}")
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith("{"))
    return {**json.loads(line), "process_s": time.perf_counter() - t}


def tracked_run(inductor: Path, model: str, dtype: str = "fp16") -> dict:
    """One first forward inside ``tcm track`` on ``inductor``; kernels by name and key."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor)
    try:
        track = ops.track([*FORWARD, "--model", str(model_dir(model)), "--dtype", dtype,
                           *DYNAMIC, *ORDER["forward"]], record=False).to_dict()  # fmt: skip
    finally:
        del os.environ["TORCHINDUCTOR_CACHE_DIR"]
    track["kernels"] = [[k["name"], k["key"], k.get("hits"), k.get("misses"), k.get("stores")]
                        for k in track.get("kernels", [])]  # fmt: skip
    return track


def sdpa_graphs(hidden: bool, profile: Path, out: Path) -> str:
    """The aten graph of three attention calls (no mask causal, bool mask, float mask; fp16,
    head dim 64) as traced on the GPU, or without it under the profile's replay."""
    code = f"""
import torch, sys
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch._dispatch.python import enable_python_dispatcher
import contextlib
F = torch.nn.functional
cases = {{
  "causal": lambda q, m, f: F.scaled_dot_product_attention(q, q, q, is_causal=True),
  "bool_mask": lambda q, m, f: F.scaled_dot_product_attention(q, q, q, attn_mask=m),
  "float_mask": lambda q, m, f: F.scaled_dot_product_attention(q, q, q, attn_mask=f),
}}
ctx = contextlib.nullcontext()
if {hidden!r}:
    from tcmtasks.gpuprofile import load
    from tcmtasks.warm import gpuless
    ctx = gpuless.patched(load({str(profile)!r}))
with ctx, FakeTensorMode(), enable_python_dispatcher():
    q = torch.empty(1, 12, 128, 64, device="cuda", dtype=torch.float16)
    m = torch.ones(1, 1, 128, 128, device="cuda", dtype=torch.bool)
    f = torch.zeros(1, 1, 128, 128, device="cuda", dtype=torch.float16)
    for name, fn in cases.items():
        print("## " + name)
        print(make_fx(fn)(q, m, f).code)
"""
    script = out / "sdpa_graph.py"
    script.write_text(code)
    cmd = [sys.executable, str(script)]
    if hidden:
        libs = driver_libraries()
        Path("/tmp/tcm-empty-lib").write_bytes(b"")
        mounts = "; ".join(f"mount --bind /tmp/tcm-empty-lib {lib}" for lib in libs)
        hide = f"{mounts}; export CUDA_VISIBLE_DEVICES=; exec {sys.executable} {script}"
        cmd = ["unshare", "-m", "bash", "-c", hide]
    proc = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True)
    if proc.returncode:
        return f"{proc.stdout}\nEXIT {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/tcm-gpuless"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="tiny-opt,opt-125m")
    ap.add_argument("--dtypes", default="fp16", help="each model in each (fp16, bf16)")
    ap.add_argument(
        "--dynamic", action="store_true", help="warms and forwards with torch.compile(dynamic=True)"
    )
    ap.add_argument(
        "--any-order", action="store_true",
        help="warms of two shapes (--any-order), forwards in another order",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, help="copy the profile and the graphs here")
    ap.add_argument("--keys-only", action="store_true", help="stop after comparing the keys")
    ap.add_argument("--quick", action="store_true",
                    help="no attention graphs, no control run (a short device budget)")  # fmt: skip
    args = ap.parse_args()
    DYNAMIC[:] = ["--dynamic"] if args.dynamic else []
    if args.any_order:
        ORDER.update(warm=ANY_ORDER_WARM, forward=ANY_ORDER_FORWARD)
    w = args.workdir
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir(parents=True)
    os.environ["TCM_DB"] = str(w / "index.db")
    from tcmtasks.producer import detect, torch_ptxas

    own = detect()  # Triton's own ptxas and torch's: the warms' keys hold torch's
    summary: dict = {"driver_libraries_hidden": driver_libraries(), "ptxas": own.ptxas,
                     "torch_ptxas": own.torch_ptxas, "torch_ptxas_path": torch_ptxas()}  # fmt: skip

    profile = w / "h200.json"
    summary["profile"] = tcm(["gpu", "--save-profile", str(profile)], clean_env())
    gpu_graphs = gpuless_graphs = "(--quick)"
    if not args.quick:
        gpu_graphs, gpuless_graphs = sdpa_graphs(False, profile, w), sdpa_graphs(True, profile, w)
    summary["sdpa_graphs_equal"] = gpu_graphs.strip() == gpuless_graphs.strip()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copy(profile, args.out / "h200-profile.json")
        (args.out / "sdpa_graphs.txt").write_text(
            f"# on the GPU\n{gpu_graphs}\n# without it (replay)\n{gpuless_graphs}"
        )

    ok = True
    import itertools

    for model, dtype in itertools.product(args.models.split(","), args.dtypes.split(",")):
        m: dict = {"dtype": dtype}
        run = f"{model}-{dtype}" if args.dtypes != "fp16" else model  # (the older names)
        local, gpuless = w / run / "local", w / run / "gpuless"
        traces = w / run / "traces"  # Inductor's key components, for a diff when keys differ

        def debug_env(name: str, traces: Path = traces) -> dict[str, str]:
            env = {**clean_env(), "TORCH_TRACE": str(traces / name)}
            if args.keys_only:  # dump the hashed graphs (bench/keydump/sitecustomize.py)
                (traces / f"gm-{name}").mkdir(parents=True, exist_ok=True)
                env["TCM_DUMP_GM"] = str(traces / f"gm-{name}")
                env["PYTHONPATH"] = os.pathsep.join([str(REPO / "bench" / "keydump"),
                                                     env["PYTHONPATH"]])  # fmt: skip
            return env

        m["local_warm"] = tcm(
            [
                "warm",
                "--backend",
                "torch",
                "--model",
                model,
                "--dtype",
                dtype,
                *DYNAMIC,
                "-o",
                str(local),
            ],
            debug_env("local"),
        )
        m["gpuless_warm"] = tcm(
            ["warm", "--backend", "torch", "--model", model, "--dtype", dtype, *DYNAMIC,
             *ORDER["warm"], "--gpu-profile", str(profile), "-o", str(gpuless)],
            debug_env("gpuless"), hidden=True,
        )  # fmt: skip
        k_local, k_gpuless = keys(local), keys(gpuless)
        m["keys_local"], m["keys_gpuless"] = k_local, k_gpuless
        m["keys_equal"] = {k: k_local[k] == k_gpuless[k] for k in k_local}
        m["triton_helpers"] = {"local": helpers(local), "gpuless": helpers(gpuless)}
        if args.out and not all(m["keys_equal"].values()):  # what differs: the generated code
            import tarfile

            with tarfile.open(args.out / f"{run}-code.tar.gz", "w:gz") as tar:
                tar.add(traces, arcname="traces")
                for name, d in (("local", local), ("gpuless", gpuless)):
                    for f in d.rglob("*"):
                        if f.is_file() and "triton" not in f.parts and f.stat().st_size < 4 << 20:
                            tar.add(f, arcname=f"{name}/{f.relative_to(d)}")
        graphs_equal = m["keys_equal"]["fxgraph"] and m["keys_equal"]["aotautograd"]
        if args.out:  # so far, in case the call is cut short
            (args.out / f"{run}.json").write_text(json.dumps(m, indent=2, default=str))
        if args.out:
            (args.out / f"{run}-triton.json").write_text(json.dumps(
                {"local_warm": triton_kernels(local), "gpuless_warm": triton_kernels(gpuless)},
                indent=1, default=str))  # fmt: skip
        if args.keys_only or not graphs_equal:  # graph misses: every round would recompile
            m["passed"] = all(m["keys_equal"].values())
            ok = ok and m["passed"]
            summary[run] = m
            if args.out:
                (args.out / f"{run}.json").write_text(json.dumps(m, indent=2, default=str))
            continue
        # the local warm as it was written: rounds run on copies, since a run may add to a cache
        pristine = w / run / "local-pristine"
        shutil.copytree(local, pristine, symlinks=True)
        image = f"oci:{w / run / 'image'}:v1"
        m["package"] = ops.package(gpuless, image).to_dict().get("digest")
        rows: dict[str, list[dict]] = {"local": [], "restored": []}
        for i in range(args.rounds):
            node = w / run / f"node{i}" / "inductor"
            t = time.perf_counter()
            report = ops.pull(image, ops.RestoreOptions(inductor_dir=node))
            pull = {
                "seconds": time.perf_counter() - t,
                "kept": len(report.kept),
                "skipped": report.skipped,
                "parts": [p.to_dict() for p in report.parts],
            }
            order = ["local", "restored"] if i % 2 == 0 else ["restored", "local"]
            own = w / run / f"local{i}" / "inductor"
            shutil.copytree(pristine, own, symlinks=True)
            for name in order:
                r = forward(own if name == "local" else node, model, dtype)
                if name == "restored":
                    r["pull"] = pull
                rows[name].append(r)
        tracked = w / run / "tracked" / "inductor"
        ops.pull(image, ops.RestoreOptions(inductor_dir=tracked))
        track = tracked_run(tracked, model, dtype)
        # the control: the same tracked run on a copy of the local warm (what a GPU warm gives)
        tracked_local = w / run / "tracked-local" / "inductor"
        shutil.copytree(pristine, tracked_local, symlinks=True)
        m["track_local"] = {} if args.quick else tracked_run(tracked_local, model, dtype)
        if args.out:
            (args.out / f"{run}-triton.json").write_text(json.dumps({
                name: triton_kernels(d) for name, d in (
                    ("local_warm", pristine), ("gpuless_warm", gpuless),
                    ("restored_after_track", tracked), ("local_after_track", tracked_local))
            }, indent=1, default=str))  # fmt: skip
        med = {k: statistics.median(r["first_forward_s"] for r in v) for k, v in rows.items()}
        m["triton_helpers"]["restored_after_track"] = helpers(tracked)
        m.update(rounds=rows, median_first_forward_s=med, track=track,
                 restored_over_local=med["restored"] / med["local"])  # fmt: skip
        hits = all(hit_both(r) for r in rows["restored"])
        m["passed"] = bool(
            all(m["keys_equal"].values()) and hits and track.get("compiled_nothing")
            and (args.quick or m["track_local"].get("compiled_nothing"))
            and m["restored_over_local"] <= 1.2
        )  # fmt: skip
        ok = ok and m["passed"]
        summary[run] = m
        if args.out:  # each model's figures as soon as they exist: a run cut short keeps them
            (args.out / f"{run}.json").write_text(json.dumps(m, indent=2, default=str))
    print(json.dumps(summary, indent=2, default=str))
    print("PROOF", "PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
