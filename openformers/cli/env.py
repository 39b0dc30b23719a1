"""``openformers env``: what a bug report needs to know about this installation and machine.

Versions (Python, PyTorch, openformers and its dependencies), the platform, the CPU and the flags the
kernels care about, PyTorch's threads, GPUs, the state of every native kernel, the cache directories
and the ``OPENFORMERS_*`` settings in effect. ``--json`` prints the same as one JSON object.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

DEPENDENCIES = ("torch", "safetensors", "tokenizers", "huggingface_hub", "numpy", "jinja2", "tqdm", "pyarrow")
OPTIONAL = ("gguf", "sentencepiece", "protobuf", "tensorboard", "wandb", "onnx", "llama_cpp_python")
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--no-build", action="store_true",
                        help="report the native kernels without compiling or loading them")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu() -> dict[str, Any]:
    from openformers.core import native

    lines = native.cpu().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())
    flags: set[str] = set()
    for line in lines:
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"model": model or "unknown", "vendor": native.cpu_vendor() or "unknown", "logical_cpus": os.cpu_count(),
            "usable_cpus": usable, "flags": {flag: flag in flags for flag in CPU_FLAGS} if flags else None}


def _torch() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "version": torch.__version__, "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "mkl": torch.backends.mkl.is_available(), "onednn": torch.backends.mkldnn.is_available(),
        "openmp": torch.backends.openmp.is_available(), "cuda_build": torch.version.cuda,
    }
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                         "capability": f"{props.major}.{props.minor}"})
    info["gpus"] = gpus
    info["mps"] = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return info


def _kernel_modules() -> list[str]:
    """The package's modules that make a ``NativeLibrary`` (found by reading the sources, so a kernel
    added anywhere is reported without a list to keep)."""
    root = Path(__file__).resolve().parents[1]
    names = []
    for path in sorted(root.rglob("*.py")):
        if path.name != "native.py" or path.parent.name != "core":
            if "NativeLibrary(" in path.read_text(encoding="utf-8", errors="replace"):
                names.append(".".join(("openformers",) + path.relative_to(root).with_suffix("").parts))
    return names


def kernels(build: bool = True) -> dict[str, Any]:
    """Every native kernel of the package: its state (loaded, built, not built, failed, disabled) and detail.
    With ``build`` each is built and loaded first, as its first use would."""
    from openformers.core import native

    root = Path(__file__).resolve().parents[1]
    problems = {}
    for name in _kernel_modules():
        try:
            importlib.import_module(name)
        except Exception as err:  # report it: a module that cannot be imported is what a bug report needs
            problems[name] = f"importing {name} failed: {type(err).__name__}: {err}"
    cc = native.compiler()
    out: dict[str, Any] = {"compiler": cc, "compiler_version": native.compiler_version(cc).splitlines()[0] if cc else None,
                           "enabled": native.enabled(), "cache": str(native.cache_dir()), "kernels": {}}
    claimed = set()
    for lib in native.libraries():
        if not lib.source.resolve().is_relative_to(root):
            continue
        if build:
            lib.get()
        state, detail = lib.state()
        key = lib.source.resolve().relative_to(root).as_posix()
        out["kernels"][key] = {"state": state, "detail": detail, "flags": list(lib.flags), "runs": lib.runs()}
        claimed.add(lib.source.resolve())
    for source in sorted(root.rglob("*.c")):
        if source.resolve() not in claimed:
            out["kernels"][source.relative_to(root).as_posix()] = {"state": "unused", "detail": "no module loads it",
                                                                   "flags": []}
    for name, why in problems.items():
        out["kernels"][name] = {"state": "failed", "detail": why, "flags": []}
    return out


def _or_error(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or ``{"error": why}`` where a setting has a bad value: the report still comes out."""
    try:
        return fn(*args)
    except ValueError as err:
        return {"error": str(err)}


def report(build: bool = True) -> dict[str, Any]:
    """Everything ``openformers env`` prints, as a JSON-serialisable dict."""
    import openformers
    from openformers.core import hub, settings
    from openformers.data.hf_cache import hf_cache_dir

    package = Path(openformers.__file__).resolve().parent
    versions = {"openformers": openformers.__version__}
    versions.update({dist: _version(dist) for dist in DEPENDENCIES})
    versions.update({dist: v for dist in OPTIONAL if (v := _version(dist)) is not None})
    data_cache = settings.get("OPENFORMERS_DATA_CACHE")
    return {
        "openformers": {"version": openformers.__version__, "location": str(package)},
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": {"system": platform.platform(), "machine": platform.machine(),
                     "libc": " ".join(platform.libc_ver()).strip() or None},
        "versions": versions,
        "cpu": _cpu(),
        "torch": _torch(),
        "native": _or_error(kernels, build),
        "caches": {
            "openformers": str(settings.get("OPENFORMERS_CACHE")),
            "native": str(settings.get("OPENFORMERS_CACHE") / "native"),
            "datasets": str(data_cache),
            "local_hub": str(settings.get("OPENFORMERS_HUB")) if settings.get("OPENFORMERS_HUB") else None,
            "HF_HOME": os.environ.get("HF_HOME"),
            "HF_HUB_CACHE": str(hub.hub_cache_dir()),
            "HF_DATASETS_CACHE": str(hf_cache_dir()),
            "offline": _or_error(hub.is_offline),
        },
        "settings": {name: {"value": str(v["value"]) if isinstance(v["value"], Path) else v["value"], "set": v["set"],
                            "raw": v["raw"]} for name, v in settings.in_effect().items()},
    }


def _text(info: dict[str, Any]) -> str:
    lines = [f"openformers {info['openformers']['version']} ({info['openformers']['location']})",
             f"Python {info['python']['version']} ({info['python']['implementation']}, {info['python']['executable']})",
             f"Platform: {info['platform']['system']} ({info['platform']['machine']}"
             + (f", {info['platform']['libc']})" if info["platform"]["libc"] else ")"), "", "Versions:"]
    lines += [f"  {name}: {v or 'not installed'}" for name, v in info["versions"].items()]
    cpu = info["cpu"]
    lines += ["", f"CPU: {cpu['model']} ({cpu['vendor']}), {cpu['usable_cpus']} of {cpu['logical_cpus']} logical CPUs usable"]
    if cpu["flags"] is not None:
        lines.append("  flags: " + " ".join(f"{flag}={'yes' if on else 'no'}" for flag, on in cpu["flags"].items()))
    t = info["torch"]
    lines += ["", f"PyTorch {t['version']}: {t['threads']} threads ({t['interop_threads']} inter-op), MKL {t['mkl']}, "
                  f"oneDNN {t['onednn']}, OpenMP {t['openmp']}, CUDA build {t['cuda_build']}"]
    lines += [f"  GPU {g['index']}: {g['name']}, {g['memory_gib']} GiB, compute capability {g['capability']}"
              for g in t["gpus"]] or ["  GPU: none" + (" (MPS available)" if t["mps"] else "")]
    n = info["native"]
    if "error" in n:
        lines += ["", f"Native kernels: not reported: {n['error']}"]
    else:
        lines += ["", f"Native kernels ({'enabled' if n['enabled'] else 'disabled by OPENFORMERS_NATIVE'}; compiler: "
                      f"{n['compiler'] or 'none'}{' (' + n['compiler_version'] + ')' if n['compiler_version'] else ''}; "
                      f"cache: {n['cache']}):"]
        for name, k in n["kernels"].items():
            detail = k["detail"].replace("\n", "\n      ")
            runs = f"; {k['runs']}" if k.get("runs") else ""
            lines.append(f"  {name}: {k['state']}" + (f" -- {detail}" if k["state"] not in ("loaded", "built") else
                                                      f" ({Path(k['detail']).name}{runs})"))
    c = info["caches"]
    offline = c["offline"]["error"] if isinstance(c["offline"], dict) else c["offline"]
    lines += ["", "Caches:", f"  openformers: {c['openformers']}", f"  datasets: {c['datasets']}",
              f"  local hub (OPENFORMERS_HUB): {c['local_hub'] or 'unset'}", f"  HF_HOME: {c['HF_HOME'] or 'unset'}",
              f"  Hugging Face hub cache: {c['HF_HUB_CACHE']}", f"  Hugging Face datasets cache: {c['HF_DATASETS_CACHE']}",
              f"  offline: {offline}"]
    set_here = {name: s for name, s in info["settings"].items() if s["set"]}
    lines += ["", "OPENFORMERS_* settings:" + ("" if set_here else " none set (all defaults)")]
    lines += [f"  {name}={s['raw']} ({s['value']})" for name, s in set_here.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    info = report(build=not args.no_build)
    print(json.dumps(info, indent=2) if args.json else _text(info))
    return 0
