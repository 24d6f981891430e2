"""bfloat16 against float32 on this machine: what `auto` (alia.core.precision) chooses, and why.

    python benchmarks/precision.py [--model models/pretrained/student_instruct] [--repeats 3]

Times a 1024 x 1024 matmul and one training step of the student (forward and backward of a batch of
8 x 256 tokens, under the Trainer's bf16 autocast where bf16) in each dtype, and prints them side by
side with float32 as the reference: the ratio is bf16's time over float32's.
"""

import argparse
import time
from pathlib import Path

import torch

from alia.core.precision import device, native_bf16, resolve_dtype


def best_of(repeats: int, step) -> float:
    step()  # warm-up: first calls pick kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul(dtype: torch.dtype) -> float:
    a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    return best_of(3, lambda: a @ b)


def training_step(model_dir: Path, bf16: bool, repeats: int) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = torch.randint(0, model.config.vocab_size, (8, 256))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        model.zero_grad()

    return best_of(repeats, step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/pretrained/student_instruct"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"device {device()}, native bf16: {native_bf16()}, auto chooses {resolve_dtype('auto')}")
    rows = [("1024x1024 matmul", matmul(torch.float32), matmul(torch.bfloat16))]
    if (args.model / "config.json").exists():
        rows.append(
            (
                f"training step of {args.model.name} (8 x 256 tokens)",
                training_step(args.model, False, args.repeats),
                training_step(args.model, True, args.repeats),
            )
        )
    print("\n| what | float32 (reference) s | bfloat16 s | bf16 / float32 |\n|---|---|---|---|")
    for what, fp32, bf16 in rows:
        print(f"| {what} | {fp32:.3f} | {bf16:.3f} | {bf16 / fp32:.1f}x |")


if __name__ == "__main__":
    main()
