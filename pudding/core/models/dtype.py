"""Which dtype to run a base model in: ``auto`` picks the fast one for the machine at hand and says why.

bfloat16 is only fast where the hardware has bf16 matrix units. Measured on the SmolLM2-135M default:

* CPU with AMX (``amx_bf16`` in ``/proc/cpuinfo``): bf16 ~3.6x faster than float32;
* CPU with AVX512-BF16 but no AMX: bf16 ~1.5x *slower* (``pudding eval --limit 200`` on PIQA 24.0 s vs 15.7 s);
* CPU with neither (AVX2 only, e.g. an AMD EPYC here): a bf16 matmul ran at ~1.2 GFLOP/s against ~120 in
  float32, and the PIQA evaluation took 222 s vs 39 s.

So on x86 CPUs ``auto`` is bf16 exactly when AMX is present. Other CPUs (e.g. Arm with bf16 instructions) get a short
timed check of a block-shaped workload (~0.1 s, once per process). CUDA gets bf16 where the GPU supports it, else
float16. The choice and its reason are printed once and recorded in every output's configuration.
"""

from __future__ import annotations

import functools
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pudding.core.errors import OptionError

DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
BF16_MIN_SPEEDUP = 1.2
"""On a CPU without a known answer, bf16 must beat float32 by this factor in the timed check to be chosen."""


@dataclass(frozen=True)
class DtypeChoice:
    """A resolved dtype, the option value it came from, and why (printed and recorded in outputs)."""

    dtype: torch.dtype
    requested: str
    reason: str

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def record(self) -> dict[str, str]:
        """The fields every output's configuration carries."""
        return {"dtype": self.name, "dtype_requested": self.requested, "dtype_reason": self.reason}


def cpu_flags() -> set[str]:
    """CPU feature flags from ``/proc/cpuinfo`` (empty where the file does not exist, e.g. macOS)."""
    path = Path("/proc/cpuinfo")
    try:
        text = path.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def machine() -> dict[str, object]:
    """The machine a result was made on, for its record: CPU model and its bf16 features, threads, GPU name."""
    info: dict[str, object] = {"platform": platform.platform(), "torch_threads": torch.get_num_threads()}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text(errors="replace")
        model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
        info["cpu"] = model
        info["amx_bf16"] = "amx_bf16" in text
        info["avx512_bf16"] = "avx512_bf16" in text
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def timed_bf16_speedup(repeats: int = 3) -> float:
    """float32 time / bfloat16 time of a block-shaped workload (Linear-SiLU-Linear on 256 tokens, width 576)."""
    torch.manual_seed(0)
    x = torch.randn(256, 576)
    w1, w2 = torch.randn(576, 1536) * 0.02, torch.randn(1536, 576) * 0.02

    def best(dtype: torch.dtype) -> float:
        a, b, c = x.to(dtype), w1.to(dtype), w2.to(dtype)
        torch.nn.functional.silu(a @ b) @ c  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.nn.functional.silu(a @ b) @ c
            times.append(time.perf_counter() - start)
            if times[-1] > 0.2:  # a slow path is already obvious; do not wait for it again
                break
        return min(times)

    return best(torch.float32) / best(torch.bfloat16)


@functools.lru_cache(maxsize=1)
def _cpu_choice() -> tuple[str, str]:
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "bfloat16", "CPU with AMX (amx_bf16): bfloat16 is ~3.6x faster than float32 there"
    if _is_x86():
        what = "AVX512-BF16 but no AMX" if "avx512_bf16" in flags else "no AMX and no AVX512-BF16"
        return "float32", f"CPU with {what}: bfloat16 is slower than float32 there"
    speedup = timed_bf16_speedup()
    if speedup >= BF16_MIN_SPEEDUP:
        return "bfloat16", f"CPU ({platform.machine()}): bfloat16 measured {speedup:.1f}x faster than float32"
    return "float32", f"CPU ({platform.machine()}): bfloat16 measured {speedup:.2f}x the speed of float32"


def _cuda_choice(device: torch.device) -> DtypeChoice:
    """bfloat16 where the GPU runs it natively (compute capability 8.0 and later: Ampere, Hopper, ...). Elsewhere
    (V100, T4) ``torch.cuda.is_bf16_supported()`` is true by emulation, which is slow, and float16, the fast format
    there, can overflow in models trained in bfloat16 (most current ones): float32 is the fastest safe choice."""
    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return DtypeChoice(
            torch.bfloat16, "auto", f"CUDA GPU {name} (compute capability {major}.{minor}): native bfloat16"
        )
    return DtypeChoice(
        torch.float32,
        "auto",
        f"CUDA GPU {name} (compute capability {major}.{minor}) has no native bfloat16, and float16 can overflow in "
        "models trained in bfloat16: float32",
    )


def cpu_prefers_bf16() -> bool:
    """Whether ``auto`` picks bfloat16 on this machine's CPU."""
    return _cpu_choice()[0] == "bfloat16"


_said: set[str] = set()


def _say_once(text: str) -> None:
    if text not in _said:
        _said.add(text)
        print(f"[pudding] {text}", file=sys.stderr, flush=True)


def choose_dtype(requested: str, device: torch.device | str, announce: bool = True) -> DtypeChoice:
    """Resolve a ``dtype`` option for ``device``; ``auto`` picks the fast dtype and says why.

    A pinned bfloat16 on a CPU where float32 is faster is honoured, with a one-time note saying so.
    """
    device = torch.device(device)
    if requested not in DTYPE_NAMES:
        raise OptionError(f"option dtype: {requested!r} is not one of {', '.join(DTYPE_NAMES)}")
    if requested != "auto":
        choice = DtypeChoice(getattr(torch, requested), requested, "set by the dtype option")
        if announce and requested == "bfloat16" and device.type == "cpu" and not cpu_prefers_bf16():
            _say_once(f"dtype bfloat16 was asked for, but float32 would be faster here ({_cpu_choice()[1]})")
        return choice
    if device.type == "cuda":
        choice = _cuda_choice(device)
    elif device.type == "cpu":
        name, reason = _cpu_choice()
        choice = DtypeChoice(getattr(torch, name), "auto", reason)
    else:
        choice = DtypeChoice(torch.float32, "auto", f"{device.type} device: float32")
    if announce:
        _say_once(f"dtype auto -> {choice.name} ({choice.reason})")
    return choice
