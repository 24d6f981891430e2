"""The teacher client against a bare openai loop: the same requests to the same simulated endpoint
(alia.llm.simulated, no latency: the client is what is measured), side by side.

    python benchmarks/teacher_client.py [--requests 2000] [--concurrency 16 64] [--max-tokens 320]

For each concurrency: requests/s of a bare `openai.AsyncOpenAI` + semaphore loop, of alia's
`LLMClient` (response cache, retries, accounting, progress bar) with a new cache, the ratio, and the
client's own time per request (the difference of the two per-request times); then the LLMClient's
warm re-run from its cache. Each prompt is distinct (a KD_Base-like passage request), so every
LLMClient request is a cache miss.
"""

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import openai

from alia.llm.client import LLMClient
from alia.llm.prompts import load_prompt
from alia.llm.simulated import FAILURE_MODES, SENSORS, SimulatedServer
from alia.llm.teacher import teacher_config


def prompts(n: int) -> list[list[dict]]:
    prompt = load_prompt("kd_base")
    return [
        prompt.messages(
            relation="asset_sensor_failure_mode",
            equipment_class=f"asset {i}",
            facts=[
                f"{SENSORS[(i + j) % len(SENSORS)]} - {FAILURE_MODES[(i * 7 + j) % len(FAILURE_MODES)]}"
                for j in range(3)
            ],
        )  # fmt: skip
        for i in range(n)
    ]


async def bare(base_url: str, messages: list[list[dict]], concurrency: int, max_tokens: int) -> float:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="no-key", max_retries=0)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(m: list[dict]) -> str:
        async with semaphore:
            response = await client.chat.completions.create(
                model="simulated", messages=m, temperature=0.7, max_tokens=max_tokens, seed=0
            )
            return response.choices[0].message.content

    start = time.perf_counter()
    answers = await asyncio.gather(*(one(m) for m in messages))
    seconds = time.perf_counter() - start
    await client.close()
    assert all(answers)
    return len(messages) / seconds


def teacher(
    base_url: str, messages: list[list[dict]], concurrency: int, max_tokens: int, cache: Path
) -> float:
    config = teacher_config(
        {
            "base_url": base_url,
            "model": "simulated",
            "api_key_env": None,
            "concurrency": concurrency,
            "max_tokens": max_tokens,
        }
    )
    with LLMClient(config, cache) as t:
        start = time.perf_counter()
        answers = t.ask(messages, desc=f"teacher, concurrency {concurrency}")
        seconds = time.perf_counter() - start
    assert all(a.ok and a.text for a in answers)
    return len(messages) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--max-tokens", type=int, default=320)
    args = parser.parse_args()
    messages = prompts(args.requests)
    rows = []
    with SimulatedServer() as server, tempfile.TemporaryDirectory() as tmp:
        for concurrency in args.concurrency:
            cache = Path(tmp) / f"c{concurrency}.sqlite"
            b = asyncio.run(bare(server.base_url, messages, concurrency, args.max_tokens))
            t = teacher(server.base_url, messages, concurrency, args.max_tokens, cache)
            warm = teacher(server.base_url, messages, concurrency, args.max_tokens, cache)
            rows.append((concurrency, b, t, warm))
    print(
        f"\n{args.requests} distinct requests, max_tokens {args.max_tokens}, simulated endpoint (no latency)"
    )
    header = ["concurrency", "bare openai/s", "LLMClient/s", "ratio", "client ms/req", "warm/s"]
    print("".join(f"{h:>15}" for h in header))
    for concurrency, b, t, warm in rows:
        own = (1 / t - 1 / b) * 1000
        print(f"{concurrency:>15}{b:>15.0f}{t:>15.0f}{t / b:>15.2f}{own:>15.2f}{warm:>15.0f}")


if __name__ == "__main__":
    main()
