"""`maq info`: which SIMD paths the C kernels were built with, which one is active, the CPU, threads."""
from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def core_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads() -> int:
    """Default thread count of the runtime: MAQ_THREADS if set, else all usable cores."""
    env = os.environ.get("MAQ_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return core_count()


def info() -> dict:
    """Everything `maq info` prints, as a dict."""
    from maq.runtime import kernels as K

    return {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cores": core_count(),
        "default_threads": default_threads(),
        "compiled_paths": ",".join(K.compiled_paths()),
        "supported_paths": ",".join(K.supported_paths()),
        "active_path": K.active_path(),
        "MAQ_FORCE_PATH": os.environ.get("MAQ_FORCE_PATH", ""),
    }


def format_info(d: dict) -> str:
    width = max(len(k) for k in d)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in d.items())


def _run(args) -> int:
    print(format_info(info()))
    return 0


def register(subparsers) -> None:
    """Add `maq info` (see maq/cli.py)."""
    p = subparsers.add_parser("info", help="show the C kernel paths (scalar/sse/avx2/neon), CPU and threads",
                              description="Show the SIMD paths compiled into the C kernels, the active one "
                                          "(MAQ_FORCE_PATH overrides it), the CPU model, cores and default threads.")
    p.set_defaults(func=_run)
