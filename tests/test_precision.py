"""Precision chosen by the hardware: `auto` is bf16 only where the device computes it natively."""

import pytest
import torch

from alia.core import precision


@pytest.fixture
def cpu(monkeypatch):
    """A CPU machine whose bf16 support the test sets."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")

    def with_bf16(avx512_bf16: bool, amx: bool = False) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)

    return with_bf16


def test_a_cpu_without_bf16_trains_and_scores_in_float32(cpu):
    cpu(avx512_bf16=False)
    assert precision.resolve_dtype("auto") == "float32" and precision.resolve_bf16("auto") is False


@pytest.mark.parametrize("avx512_bf16, amx", [(True, False), (False, True)])
def test_a_cpu_with_bf16_trains_in_bf16(cpu, avx512_bf16, amx):
    cpu(avx512_bf16, amx)
    assert precision.resolve_dtype("auto") == "bfloat16" and precision.resolve_bf16("auto") is True


def test_an_explicit_value_wins(cpu):
    cpu(avx512_bf16=False)
    assert precision.resolve_dtype("bfloat16") == "bfloat16" and precision.resolve_bf16(True) is True
    cpu(avx512_bf16=True)
    assert precision.resolve_dtype("float32") == "float32" and precision.resolve_bf16(False) is False
    with pytest.raises(ValueError, match=r"dtype 'float64': expected auto or one of"):
        precision.resolve_dtype("float64")


def test_the_stage_prints_its_choice(cpu, capsys):
    cpu(avx512_bf16=False)
    info = precision.report("train_student@kd_base", dtype="float32", bf16=False)
    line = capsys.readouterr().out.strip()
    chosen = "native_bf16=False, dtype=float32, bf16=False"
    assert line == f"train_student@kd_base: precision device={info['device']}, {chosen}"
    assert info["device"] == f"cpu:{torch.backends.cpu.get_cpu_capability()}"
