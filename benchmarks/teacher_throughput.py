"""Teacher throughput: the same 64 prompts through the local llama.cpp server, sequential vs
concurrency 8, then a warm re-run from the response cache. Prints completions/s and the ratios.

    python benchmarks/teacher_throughput.py [--prompts 64] [--max-tokens 48]

One server serves all three runs, so its start-up (printed apart) is not in the rates.
"""

import argparse
import itertools
import tempfile
import time
from pathlib import Path

from alia.llm.client import ClientConfig, LLMClient
from alia.llm.llama_server import LocalServer
from alia.llm.teacher import teacher_config

ASSETS = ["centrifugal pump", "gas compressor", "steam turbine", "electric motor",
          "power transformer", "fan", "diesel engine", "heat exchanger"]  # fmt: skip
QUESTIONS = ["Name one sensor that monitors a {}.", "Name one failure mode of a {}.",
             "What does vibration monitoring reveal in a {}?", "Why would oil debris rise in a {}?",
             "Which component of a {} wears first?", "How is overheating detected in a {}?",
             "What causes noise in a {}?", "What does a thermography survey of a {} show?"]  # fmt: skip


def run(config: ClientConfig, cache: Path, prompts: list) -> tuple[float, dict]:
    with LLMClient(config, cache) as teacher:
        start = time.perf_counter()
        answers = teacher.ask(prompts, desc=f"concurrency {config.concurrency}")
        seconds = time.perf_counter() - start
    assert all(a.ok for a in answers)
    return len(prompts) / seconds, teacher.metrics() | teacher.run_stats()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    pairs = itertools.islice(itertools.product(QUESTIONS, ASSETS), args.prompts)
    prompts = [[{"role": "user", "content": q.format(a)}] for q, a in pairs]

    local = teacher_config().local  # params.yaml teacher.local
    start = time.perf_counter()
    with LocalServer(local, "smollm2") as server, tempfile.TemporaryDirectory() as tmp:
        print(f"server start-up: {time.perf_counter() - start:.1f} s")
        base = {"base_url": server.base_url, "model": "smollm2", "api_key_env": None,
                "temperature": 0.0, "max_tokens": args.max_tokens}  # fmt: skip
        sequential, m1 = run(teacher_config(base | {"concurrency": 1}), Path(tmp) / "a.sqlite", prompts)
        concurrent, m8 = run(teacher_config(base | {"concurrency": 8}), Path(tmp) / "b.sqlite", prompts)
        warm, mw = run(teacher_config(base | {"concurrency": 8}), Path(tmp) / "b.sqlite", prompts)

    tokens = m1["completion_tokens"] / len(prompts)
    print(
        f"\n{len(prompts)} prompts, max_tokens {args.max_tokens}, {tokens:.1f} completion tokens on average"
    )
    print(f"{'run':<24}{'completions/s':>14}{'calls':>7}{'cache hits':>12}")
    for name, rate, m in [("sequential (1)", sequential, m1), ("concurrency 8", concurrent, m8),
                          ("warm re-run (cache)", warm, mw)]:  # fmt: skip
        print(f"{name:<24}{rate:>14.2f}{m['calls']:>7}{m['cache_hits']:>12}")
    print(f"\nconcurrency 8 / sequential: {concurrent / sequential:.2f}x")
    print(f"warm re-run / cold concurrency 8: {warm / concurrent:.0f}x")


if __name__ == "__main__":
    main()
