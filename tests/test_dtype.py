"""``dtype: auto`` picks bfloat16 only where it is fast, says why, and every output records the choice."""

from __future__ import annotations

import pytest
import torch

from pudding.core.models import dtype as dtype_module
from pudding.core.models.dtype import choose_dtype


@pytest.fixture
def machine(monkeypatch):
    """Pretend to be another CPU: set its flags, architecture and (for non-x86) the timed check's result."""

    def pretend(flags: set[str], x86: bool = True, speedup: float = 1.0) -> None:
        monkeypatch.setattr(dtype_module, "cpu_flags", lambda: set(flags))
        monkeypatch.setattr(dtype_module, "_is_x86", lambda: x86)
        monkeypatch.setattr(dtype_module, "timed_bf16_speedup", lambda: speedup)
        dtype_module._cpu_choice.cache_clear()
        dtype_module._said.clear()

    yield pretend
    dtype_module._cpu_choice.cache_clear()


@pytest.mark.parametrize(
    ("flags", "x86", "speedup", "expected", "why"),
    [
        ({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, True, 1.0, torch.bfloat16, "AMX"),
        ({"avx2", "avx512f", "avx512_bf16"}, True, 9.0, torch.float32, "AVX512-BF16 but no AMX"),
        ({"avx2", "fma"}, True, 9.0, torch.float32, "no AMX and no AVX512-BF16"),
        ({"bf16", "sve"}, False, 2.0, torch.bfloat16, "measured 2.0x faster"),
        ({"asimd"}, False, 0.4, torch.float32, "measured 0.40x"),
    ],
)
def test_auto_on_cpus(machine, capsys, flags, x86, speedup, expected, why):
    machine(flags, x86, speedup)
    choice = choose_dtype("auto", "cpu")
    assert choice.dtype == expected and why in choice.reason
    assert choice.record() == {"dtype": str(expected)[6:], "dtype_requested": "auto", "dtype_reason": choice.reason}
    err = capsys.readouterr().err
    assert f"dtype auto -> {choice.name}" in err and why in err
    choose_dtype("auto", "cpu")
    assert capsys.readouterr().err == ""  # said once per process


def test_pinned_bf16_on_a_cpu_without_amx_says_float32_is_faster(machine, capsys):
    machine({"avx2", "avx512_bf16"})
    assert choose_dtype("bfloat16", "cpu").dtype == torch.bfloat16  # honoured
    assert "float32 would be faster here" in capsys.readouterr().err
    machine({"amx_bf16"})
    choose_dtype("bfloat16", "cpu")
    assert capsys.readouterr().err == ""


def test_pinned_and_unknown_dtypes(machine):
    machine({"avx2"})
    assert choose_dtype("float16", "cpu").dtype == torch.float16
    assert choose_dtype("float32", "cpu", announce=False).reason == "set by the dtype option"
    with pytest.raises(ValueError, match="option dtype: 'float33'"):
        choose_dtype("float33", "cpu")


def test_timed_check_runs_and_is_positive():
    assert dtype_module.timed_bf16_speedup(repeats=1) > 0


def test_outputs_record_the_dtype(tiny_llama, tokenizer, tmp_path):
    """The candidate file's search section carries dtype, how it was asked for and why."""
    from pudding.core.models.loading import BaseModel
    from pudding.search.runs import dtype_record

    base = BaseModel(model=tiny_llama, tokenizer=tokenizer, name="tiny", dtype_choice=choose_dtype("float32", "cpu"))
    assert dtype_record(base) == {
        "dtype": "float32",
        "dtype_requested": "float32",
        "dtype_reason": "set by the dtype option",
    }
    plain = BaseModel(model=tiny_llama, tokenizer=tokenizer, name="tiny")
    assert dtype_record(plain)["dtype"] == "float32"


@pytest.mark.parametrize(
    ("native", "capability", "expected", "why"),
    [
        (True, (9, 0), torch.bfloat16, "native bfloat16"),
        (False, (7, 5), torch.float32, "no native bfloat16"),  # a T4: bfloat16 only by (slow) emulation
    ],
)
def test_auto_on_cuda_takes_bfloat16_only_where_the_gpu_has_it(monkeypatch, native, capability, expected, why):
    asked = []

    def supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return native or including_emulation  # emulation alone would say yes on every GPU

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a GPU")
    choice = choose_dtype("auto", "cuda", announce=False)
    assert choice.dtype == expected and why in choice.reason and f"{capability[0]}.{capability[1]}" in choice.reason
    assert asked == [False]
