"""Precision chosen by the hardware: every dtype and bf16 setting of params.yaml may be `auto`.

`auto` is bfloat16 where the device computes it natively (a CUDA GPU that supports it; a CPU with
AVX-512 BF16 or AMX, or an Arm CPU whose oneDNN build has bf16 kernels), float32 elsewhere. On a
CPU without them torch emulates bf16: a 1024 x 1024 matmul took 2.6 s against 39 ms in float32 on
a 2-core AVX2 EPYC (67x; `python benchmarks/precision.py` measures it on yours). An explicit value
always wins. Stages print the choice and log it to MLflow (`precision.*`).
"""

from __future__ import annotations

import platform
from typing import Any

AUTO = "auto"
DTYPES = ("float32", "bfloat16", "float16")


def device() -> str:
    """What computes here, as a reader would name it: `cuda:<GPU name>` or `cpu:<capability>`."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return f"cpu:{torch.backends.cpu.get_cpu_capability()}"


def native_bf16() -> bool:
    """Whether this machine computes bfloat16 natively, the device training and scoring use."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if platform.machine().lower() in ("arm64", "aarch64"):
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    # on x86 oneDNN's bf16 check also accepts plain AVX-512, which emulates bf16 in float32 code
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_dtype(setting: str) -> str:
    """A dtype setting (`auto` or one of DTYPES) as the dtype to use here."""
    if setting == AUTO:
        return "bfloat16" if native_bf16() else "float32"
    if setting not in DTYPES:
        raise ValueError(f"dtype {setting!r}: expected {AUTO} or one of {DTYPES}")
    return setting


def resolve_bf16(setting: bool | str) -> bool:
    """A Trainer `bf16` setting (`auto`, true or false) as the flag to use here."""
    return native_bf16() if setting == AUTO else bool(setting)


def report(stage: str, **chosen: Any) -> dict[str, Any]:
    """The precision a stage runs with, printed on one line; returned for its MLflow params."""
    info = {"device": device(), "native_bf16": native_bf16(), **chosen}
    print(f"{stage}: precision " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    return info
