"""The local default teacher: llama.cpp's OpenAI-compatible server over a GGUF model on 127.0.0.1.

`teacher.base_url: local` starts it on the first uncached prompt of a stage and stops it when the
stage ends; its settings are params.yaml `teacher.local`.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from alia.core.models import resolve_source

PR_SET_PDEATHSIG = 1  # prctl(2)


class LocalServerConfig(BaseModel):
    """params.yaml `teacher.local` (every default is there)."""

    model_config = ConfigDict(extra="forbid")
    model: str  # a model source naming a GGUF file, see alia.core.models
    n_ctx: int
    n_threads: int
    startup_timeout: float


def _die_with_parent() -> None:
    """In the server's process before it starts (Linux): SIGTERM when the stage that started it dies,
    killed with -9 included, so no server outlives its stage holding a port and memory."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """An OpenAI-compatible server in a child process on 127.0.0.1: started, waited for until its
    /models answers, stopped. LocalServer and alia.llm.simulated.SimulatedServer are ones."""

    name = "server"  # in errors: "the <name> exited with code 1"
    log_path: Path | None = None
    process: subprocess.Popen | None = None
    base_url = ""

    def _start(self, command: list[str], port: int, timeout: float, poll: float = 0.25) -> None:
        """Run `command` (serving on `port`), its output to `log_path`; return once it answers."""
        self.base_url = f"http://127.0.0.1:{port}/v1"
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        try:
            self._wait_until_ready(timeout, poll)
        except BaseException:
            self._stop()
            raise

    def _wait_until_ready(self, timeout: float, poll: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                where = f"; see {self.log_path}" if self.log_path else ""
                raise RuntimeError(f"the {self.name} exited with code {self.process.returncode}{where}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(poll)
        raise TimeoutError(f"the {self.name} did not answer within {timeout} s")

    def death(self) -> str:
        """'' while the server runs; once it has died, how (a failed request's error ends with it, since
        the client only sees refused connections)."""
        if self.process is None or self.process.poll() is None:
            return ""
        code = self.process.returncode
        how = f"by {signal.Signals(-code).name}" if code < 0 else f"with code {code}"
        where = f"; see {self.log_path}" if self.log_path else ""
        return f"the {self.name} had died ({how}){where}"

    def _stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class LocalServer(ServerProcess):
    """llama.cpp's OpenAI-compatible server over a GGUF model, on 127.0.0.1, for one `with` block."""

    name = "local teacher server"

    def __init__(self, config: LocalServerConfig, model_alias: str, log_path: str | Path | None = None):
        self.config, self.model_alias = config, model_alias
        self.log_path = Path(log_path) if log_path else None

    def __enter__(self) -> LocalServer:
        self._workdir = tempfile.TemporaryDirectory()
        source = resolve_source(self.config.model, self._workdir.name)
        if not source.is_gguf:
            raise ValueError(
                f"teacher.local.model must name a GGUF file for llama.cpp, got {self.config.model!r}"
            )
        port = free_port()
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
        try:
            self._start(cmd, port, self.config.startup_timeout)
        except BaseException:
            self._workdir.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()
        self._workdir.cleanup()
