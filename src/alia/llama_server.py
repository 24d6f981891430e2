"""The local default teacher: llama.cpp's OpenAI-compatible server over a GGUF model on 127.0.0.1.

`teacher.base_url: local` starts it on the first uncached prompt of a stage and stops it when the
stage ends; its settings are params.yaml `teacher.local`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from alia.models import resolve_source


class LocalServerConfig(BaseModel):
    """params.yaml `teacher.local` (every default is there)."""

    model_config = ConfigDict(extra="forbid")
    model: str  # a model source naming a GGUF file, see alia.models
    n_ctx: int
    n_threads: int
    startup_timeout: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """llama.cpp's OpenAI-compatible server over a GGUF model, on 127.0.0.1, for one `with` block."""

    def __init__(self, config: LocalServerConfig, model_alias: str, log_path: str | Path | None = None):
        self.config, self.model_alias = config, model_alias
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None
        self.base_url = ""

    def __enter__(self) -> LocalServer:
        self._workdir = tempfile.TemporaryDirectory()
        source = resolve_source(self.config.model, self._workdir.name)
        if not source.is_gguf:
            raise ValueError(
                f"teacher.local.model must name a GGUF file for llama.cpp, got {self.config.model!r}"
            )
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}/v1"
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            source.location,
            "--model_alias",
            self.model_alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            str(self.config.n_ctx),
            "--n_threads",
            str(self.config.n_threads),
        ]
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_until_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                where = f"; see {self.log_path}" if self.log_path else ""
                raise RuntimeError(
                    f"the local teacher server exited with code {self.process.returncode}{where}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        raise TimeoutError(f"the local teacher server did not answer within {self.config.startup_timeout} s")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._workdir.cleanup()
