"""The teacher in batch mode (alia.llm.batch) against the simulated endpoint's Batch API: a stage's
answers from its batches equal the streaming path's, a run killed between submission and download
submits nothing new when it runs again, failed lines are asked again on the streaming path and
counted, files split at the limits, and the offline files mode that `vllm run-batch` answers."""

import json
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest
from conftest import REPO, teacher_config

from alia.kd.phase1 import check_relevance
from alia.llm.batch import request_lines, results_name, split
from alia.llm.client import LLMClient, LLMError
from alia.llm.prompts import load_prompt
from alia.llm.simulated import SimulatedConfig, SimulatedServer, SimulatedTeacher

REQUESTS = pd.DataFrame(
    [
        ("Pump", fm, sensor)
        for fm in ("cavitation", "seal leak", "bearing wear")
        for sensor in ("vibration", "flow")
    ],
    columns=["equipment_class", "failure_mode", "sensor"],
)


def config(base_url: str, **batch):
    settings = {"enabled": True, "poll_interval": 0.05} | batch
    return teacher_config(base_url=base_url, model="simulated", api_key_env=None, retries=1, batch=settings)


def relevance(base_url: str, cache, **batch) -> tuple[pd.DataFrame, dict]:
    with LLMClient(config(base_url, **batch), cache) as teacher:
        out = check_relevance(teacher, load_prompt("relevance_check"), REQUESTS)
        return out, teacher.run_stats()


def test_a_stage_from_its_batches_equals_the_streaming_stage(tmp_path):
    with SimulatedServer() as server:
        streamed, streaming = relevance(server.base_url, tmp_path / "s.sqlite", enabled=False)
        batched, stats = relevance(server.base_url, tmp_path / "b.sqlite", max_requests=4)
        served = server.stats()
    columns = ["relevant", "reason", "text", "cache_key", "prompt_tokens", "completion_tokens"]
    pd.testing.assert_frame_equal(batched[columns], streamed[columns])
    assert streaming["calls"] == 6 and stats["calls"] == 0  # every answer came from the batches
    assert stats["batch_requests"] == stats["batch_answers"] == 6 and stats["batch_failed"] == 0
    assert served["batches"] == 2  # 6 requests, at most 4 a batch
    assert stats["new_completion_tokens"] == streaming["new_completion_tokens"]
    _, again = relevance(server_url := server.base_url, tmp_path / "b.sqlite", max_requests=4)
    assert again["batch_requests"] == 0 and again["cache_hits"] == 6, server_url  # warm: nothing submitted


def test_failed_lines_are_asked_again_on_the_streaming_path_and_counted(tmp_path):
    with SimulatedServer(SimulatedConfig(rate_batch_failed=0.5)) as server:
        batched, stats = relevance(server.base_url, tmp_path / "b.sqlite")
    with SimulatedServer() as server:
        streamed, _ = relevance(server.base_url, tmp_path / "s.sqlite", enabled=False)
    assert 0 < stats["batch_failed"] < 6 and stats["calls"] == stats["batch_failed"]
    assert stats["batch_answers"] + stats["batch_failed"] == 6
    assert batched["text"].tolist() == streamed["text"].tolist()


def test_a_line_that_failed_is_not_batched_again(tmp_path):
    # a chunked stage answers the whole table by batches, then asks chunk by chunk (ask_rows_in_chunks):
    # the lines that failed go to the streaming path then, not into a batch of their own
    prompt = load_prompt("relevance_check")
    prompts = [prompt.messages(**row) for row in REQUESTS.to_dict("records")]
    with SimulatedServer(SimulatedConfig(rate_batch_failed=0.5)) as server:
        with LLMClient(config(server.base_url), tmp_path / "b.sqlite") as teacher:
            teacher.answer_in_batches(prompts, prompt.schema())
            failed = teacher.stats["batch_failed"]
            check_relevance(teacher, prompt, REQUESTS)
            stats = teacher.run_stats()
        served = server.stats()
    assert failed > 0 and served["batches"] == 1 and stats["batch_requests"] == 6
    assert stats["calls"] == failed and served["answered_twice"] == 0


def test_what_the_batch_saved_at_a_price(tmp_path):
    with SimulatedServer() as server:
        _, stats = relevance(
            server.base_url,
            tmp_path / "b.sqlite",
            price_per_1m_prompt_tokens=2.5,
            price_per_1m_completion_tokens=10.0,
        )
    spent = stats["new_prompt_tokens"] * 2.5 + stats["new_completion_tokens"] * 10.0  # micro-USD streaming
    assert stats["batch_saved_microusd"] == pytest.approx(spent * 0.5, abs=6)


KILLED_RUN = """
import sys
sys.path.insert(0, {tests!r})
from conftest import teacher_config
from alia.kd.phase1 import check_relevance
from alia.llm.client import LLMClient
from alia.llm.prompts import load_prompt
from test_batch import REQUESTS, config
with LLMClient(config({url!r}, poll_interval=0.05), {cache!r}) as teacher:
    check_relevance(teacher, load_prompt("relevance_check"), REQUESTS)
"""


def test_a_run_killed_between_submission_and_download_submits_nothing_new(tmp_path):
    cache = tmp_path / "b.sqlite"
    with SimulatedServer(SimulatedConfig(batch_delay=6.0)) as server:
        code = KILLED_RUN.format(tests=str(REPO / "tests"), url=server.base_url, cache=str(cache))
        run = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and run.poll() is None:
            if cache.exists() and _recorded(cache):
                break
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        run.wait()
        assert _recorded(cache) == 1 and server.stats()["batches"] == 1  # submitted, never downloaded
        _, stats = relevance(server.base_url, cache)
        served = server.stats()
    assert served["batches"] == 1 and stats["batch_requests"] == 0  # the same batch, waited for
    assert stats["batch_answers"] == 6 and stats["calls"] == 0


def _recorded(cache) -> int:
    try:
        with sqlite3.connect(cache) as db:
            return db.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_the_local_server_has_no_batch_api(tmp_path):
    with pytest.raises(LLMError, match="local llama.cpp server has no Batch API"):
        relevance("local", tmp_path / "b.sqlite")


def test_files_split_at_the_request_and_byte_limits():
    lines = request_lines(
        "m", {f"k{i}": ([{"role": "user", "content": "x" * 50}], {"seed": 0}) for i in range(7)}
    )
    assert [len(f) for f in split(lines, max_requests=3, max_bytes=10**6)] == [3, 3, 1]
    size = len(lines[0].encode()) + 1
    assert [len(f) for f in split(lines, max_requests=100, max_bytes=2 * size)] == [2, 2, 2, 1]
    first = json.loads(lines[0])
    assert (
        first["custom_id"] == "k0"
        and first["url"] == "/v1/chat/completions"
        and first["body"]["model"] == "m"
    )


def test_files_mode_says_the_vllm_command_then_reads_its_results(tmp_path):
    folder = tmp_path / "batches"
    with pytest.raises(
        LLMError, match=r"vllm run-batch -i .*requests-\w+\.jsonl -o .*results\.jsonl --model simulated"
    ):
        relevance("http://127.0.0.1:9/v1", tmp_path / "b.sqlite", mode="files", folder=str(folder))
    (requests_file,) = folder.glob("requests-*.jsonl")
    # what `vllm run-batch` writes: one result line per request line (here the simulated teacher's answers)
    teacher = SimulatedTeacher(SimulatedConfig())
    results = []
    for line in map(json.loads, requests_file.read_text().splitlines()):
        body = teacher.completion(line["body"], line["custom_id"])
        results.append(
            {
                "id": "r",
                "custom_id": line["custom_id"],
                "response": {"status_code": 200, "body": body},
                "error": None,
            }
        )
    (folder / results_name(requests_file.name)).write_text("".join(json.dumps(r) + "\n" for r in results))
    out, stats = relevance("http://127.0.0.1:9/v1", tmp_path / "b.sqlite", mode="files", folder=str(folder))
    assert (
        stats["batch_answers"] == 6 and stats["calls"] == 0 and out["ok"].all()
    )  # no endpoint was ever asked
