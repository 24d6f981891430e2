"""A teacher run in its own process, for the SIGKILL test: python teacher_worker.py BASE_URL CACHE N"""

import sys

from conftest import teacher_config

from alia.llm.client import LLMClient

base_url, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = teacher_config(base_url=base_url, model="fake-model", api_key_env=None, concurrency=2)
with LLMClient(config, cache) as teacher:
    answers = teacher.ask([[{"role": "user", "content": f"[sleep=0.1] prompt {i}"}] for i in range(n)])
print(sum(a.ok for a in answers))
