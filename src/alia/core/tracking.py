"""How every stage ends (`finish_stage`: metrics and plots as files, the numbers, the run's own counts
and the input datasets in MLflow) or fails (alia.core.errors: one line), and the MLflow plumbing behind it.

By default runs go to a sqlite store in the repository (`mlflow.db`, ignored by git), so
`mlflow ui --backend-store-uri sqlite:///mlflow.db` shows them; set MLFLOW_TRACKING_URI to use a
team server instead. Each run is tagged with the DVC stage, the git commit and, under
`dvc exp run`, the DVC experiment name, so an MLflow run can be traced back to `dvc exp show`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import yaml

from alia.core import errors
from alia.core.io import write_json

# Every stage imports this module: a known failure prints one line, not a traceback.
errors.install()
# ... and imports it first among alia's modules: a run opened only at the stage's end starts here.
STARTED_MS = int(time.time() * 1000)

EXPERIMENT = "alia"
# MLflow rejects param values longer than this.
MAX_PARAM_LENGTH = 500


def repo_root() -> Path:
    """The DVC repository root: DVC_ROOT while DVC runs a stage, else the current directory's git root.

    `dvc exp run --temp` and queued experiments run in a copy under <repo>/.dvc/tmp/exps/; their runs
    belong to <repo>, not to the copy that DVC deletes afterwards.
    """
    if os.environ.get("DVC_ROOT"):
        root = Path(os.environ["DVC_ROOT"])
    else:
        try:
            out = subprocess.run(
                ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
            )
            root = Path(out.stdout.strip())
        except (OSError, subprocess.CalledProcessError):
            root = Path.cwd()
    parts = root.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def git_commit(root: Path | None = None) -> tuple[str, bool]:
    """(commit sha, whether the work tree has uncommitted changes); ("", False) outside git."""
    root = root or repo_root()
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "", False
    return sha.stdout.strip(), bool(status.stdout.strip())


def run_tags(stage: str) -> dict[str, str]:
    commit, dirty = git_commit()
    tags = {
        "alia.stage": stage,
        "mlflow.source.git.commit": commit,
        "alia.git_dirty": str(dirty).lower(),
    }
    # DVC sets these while it runs `dvc exp run`; a plain `dvc repro` leaves them unset.
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc.exp_baseline_rev"] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params as dotted keys, each value cut to MLflow's length limit."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten_params(value, f"{name}.")
        else:
            text = str(value)
            flat[name] = text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."
    return flat


class Killed(BaseException):
    """SIGTERM (`kill`, a scheduler's time limit) raised in the main thread, so that the run ends."""


def _killed(signum: int, frame: Any) -> None:
    raise Killed(f"killed by {signal.Signals(signum).name}")


def close_dead_runs(client: Any, experiment_id: str) -> list[str]:
    """End as KILLED the runs of this experiment still RUNNING whose process on this host is gone
    (SIGKILL, the OOM killer, a power cut: nothing in the process could end them); their ids."""
    host, closed = socket.gethostname(), []
    running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
    for run in running:
        tags = run.data.tags
        if tags.get("alia.host") != host or not tags.get("alia.pid", "").isdigit():
            continue
        try:
            os.kill(int(tags["alia.pid"]), 0)
            continue  # alive: a stage running beside this one
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        closed.append(run.info.run_id)
    # a nested run (train_embedder's seeds) went with its parent
    closed += [r.info.run_id for r in running if r.data.tags.get("mlflow.parentRunId") in closed]
    for run_id in closed:
        client.set_terminated(run_id, status="KILLED")
    return closed


@contextmanager
def start_run(
    stage: str,
    params: dict[str, Any] | None = None,
    experiment: str = EXPERIMENT,
    variant: str | None = None,
    start_time: int | None = None,
) -> Iterator[Any]:
    """An MLflow run for one stage (one `variant` of a foreach stage), tagged for traceability, with the
    stage's params logged; `start_time` (ms) backdates it to when the stage's work began.

    The run ends FINISHED, FAILED on an error, KILLED on Ctrl-C or SIGTERM; a run left RUNNING by a
    process killed outright is ended KILLED by the next run on this host (close_dead_runs).
    """
    import mlflow  # imported here: it takes seconds, and most of alia never needs it

    mlflow.set_tracking_uri(tracking_uri())
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    client = mlflow.MlflowClient()
    close_dead_runs(client, experiment_id)
    tags = run_tags(stage) | {"alia.host": socket.gethostname(), "alia.pid": str(os.getpid())}
    if variant:
        tags["alia.variant"] = variant  # the foreach key: the DVC stage is <stage>@<variant>
    name = f"{stage}[{variant}]" if variant else stage
    run_name = f"{name}@{tags.get('dvc.exp_name') or tags['mlflow.source.git.commit'][:7] or 'workspace'}"
    created = client.create_run(experiment_id, start_time=start_time, tags=tags, run_name=run_name)
    # a handler can only be set from the main thread (a test's or a server's thread keeps the default)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _killed) if in_main else None
    run = mlflow.start_run(run_id=created.info.run_id)
    status = "FINISHED"
    try:
        if params:
            mlflow.log_params(flatten_params(params))
        yield run
    except (Killed, KeyboardInterrupt):
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        mlflow.end_run(status)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


_tracing = False  # trace_agent was called: agent_span opens a root span per question


def trace_agent() -> None:
    """From now on, the agent's runs, steps and tool calls (smolagents) and the endpoint calls behind
    them (openai) are MLflow traces, in the run in progress: the UI's Traces view. An answer the
    response cache already holds makes no call, so it shows as the agent's step alone."""
    import mlflow

    global _tracing
    mlflow.smolagents.autolog(silent=True)
    mlflow.openai.autolog(silent=True)
    _tracing = True


@contextmanager
def agent_span(question: str) -> Iterator[Any]:
    """The root span of one agent run while trace_agent is on (else None): the caller sets its outputs
    and, where the agent ended without an answer (max steps), its status ERROR, which is the trace's."""
    if not _tracing:
        yield None
        return
    import mlflow
    from mlflow.entities import SpanType

    with mlflow.start_span(name="agent", span_type=SpanType.AGENT) as span:
        span.set_inputs({"question": question})
        yield span


# --- how every stage ends ----------------------------------------------------------------------

_METRIC_NAME = re.compile(r"[^\w\-./ ]")  # what MLflow allows in a metric name


def numeric_leaves(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of nested metrics under dotted names that MLflow accepts (hit@1 -> hit_at_1)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = _METRIC_NAME.sub("_", f"{prefix}{key}".replace("@", "_at_"))
        if isinstance(value, dict):
            flat |= numeric_leaves(value, f"{name}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = value
    return flat


def check_outputs(*paths: str | Path) -> None:
    """The folder each output (a file or a folder) goes in, made and written to once (a probe file,
    removed): a folder the stage cannot write stops it now, in one line naming it, not after the work.
    A probe also catches what a mode check cannot: a read-only mount, a full disk, running as root."""
    for path in map(Path, paths):
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".alia-write-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise OSError(
                f"{folder}: cannot write the output {path} there ({error.strerror or error})"
            ) from None


def dvc_digest(path: str | Path, lock_file: str | Path = "dvc.lock") -> str | None:
    """The hash dvc.lock records for the output `path` (or the output folder that holds it); None for a
    path that no stage has written yet. DVC writes each stage's lock entry as soon as the stage ends,
    so a stage reads its inputs' hashes from the stages that ran before it."""
    lock_file = Path(lock_file)
    if not lock_file.exists():
        return None
    hashes = {
        out["path"]: out.get("md5") or out.get("hash")
        for stage in (yaml.safe_load(lock_file.read_text()) or {}).get("stages", {}).values()
        for out in stage.get("outs", [])
    }
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.as_posix() in hashes:
            return hashes[candidate.as_posix()]
    return None


def log_inputs(inputs: dict[str | Path, str]) -> None:
    """Each input path as an MLflow dataset of the active run (the UI's Datasets column): named by its
    path, its digest the DVC hash, tagged with its context (training, validation, evaluation)."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for path, context in inputs.items():
        with warnings.catch_warnings():  # two registered local-file sources resolve it alike
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(Path(path).resolve().as_uri())
        digest = dvc_digest(path)
        dataset = MetaDataset(source, name=Path(path).as_posix(), digest=digest[:36] if digest else None)
        mlflow.log_input(dataset, context=context)


def finish_stage(
    stage: str,
    metrics: dict[str, Any],
    metrics_file: str | Path,
    params: dict[str, Any] | None = None,
    plots: dict[str | Path, Any] | None = None,
    teacher: Any = None,
    variant: str | None = None,
    artifacts: Sequence[str | Path] = (),
    run_stats: dict[str, Any] | None = None,
    inputs: dict[str | Path, str] | None = None,
) -> None:
    """How every stage ends: its metrics JSON (with the `teacher`'s counts, if it used one) and its plot
    files written, every number logged to MLflow, the metrics printed.

    `run_stats` are what only this run decides (seconds, a resumed step; the teacher's calls and cache
    hits): MLflow and the printed line get them, the metrics file does not, so that `dvc metrics
    diff` after a warm re-run is empty. `inputs` ({path: context}) are logged as MLflow datasets.
    MLflow gets all of it in the run in progress (a training stage opens its run before training, so
    that the trainer logs its curves there), else in a new run of the stage with `params` (and the
    teacher's settings) logged.
    """
    import mlflow  # imported here: it takes seconds, and only the end of a stage needs it

    run_stats = dict(run_stats or {})
    if teacher is not None:
        metrics = {**metrics, "teacher": teacher.metrics()}
        run_stats["teacher"] = teacher.run_stats()
        params = {stage: params or {}, "teacher": teacher.config.model_dump()}
    write_json(metrics_file, metrics)
    for path, rows in (plots or {}).items():
        write_json(path, rows)
    new_run = not mlflow.active_run()
    with start_run(stage, params, variant=variant, start_time=STARTED_MS) if new_run else nullcontext():
        mlflow.log_metrics(numeric_leaves(metrics) | numeric_leaves(run_stats, "run."))
        log_inputs(inputs or {})
        for artifact in artifacts:
            mlflow.log_artifact(str(artifact))
    print(json.dumps(metrics))
    if run_stats:
        print(json.dumps({"run": run_stats}))
