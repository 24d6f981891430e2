"""The teacher chain at the ALIA paper's volumes, rehearsed against the simulated teacher
(alia.llm.simulated): configs/paper_scale.yaml at the given scales (1.0: all 44 classes; 0.1:
4 of them and a tenth of the documents asked about), each cold (empty response caches), then warm.

    python benchmarks/paper_scale.py [--scale 0.1 1.0] [--workdir DIR] [--concurrency 64]
        [--kill-at 60000] [--faults] [--batch] [--no-warm]

Each scale works in its own clone of the repository at HEAD (its code, not the work tree's; the
tables and the pretrained tokenizers copied in) and runs the stages' own command lines from
dvc.yaml, sensor_discovery through corpus_stats, one process each, against one simulated server
for the whole chain, whose counts say how many requests it answered and whether any twice. Per stage
it prints the requests the teacher sent, wall time, requests/s, peak RSS of the stage's process, and
the sizes of its outputs and response cache.

- `--kill-at N`: kd_extend, the largest stage, is killed with SIGKILL once N of its answers are
  cached, then run again; the server counts the requests it answered twice (at most those in flight
  at the kill), and every output is read back as Parquet.
- warm: every stage run again from its response cache (as `dvc repro -f` would: 0 calls), then the
  chain recorded in dvc.lock (`dvc commit`) and `dvc repro` timed: DVC's own warm re-run.
- `--faults`: 5% HTTP 429, 5% HTTP 500, 1% time-outs, 1% dropped connections and 2% malformed answers
  (a client time-out of 5 s, 8 retries); the chain must finish with every answer kept.
- `--batch`: the teacher in batch mode (`teacher.batch`, alia.llm.batch): each stage's prompts as
  Batch API jobs (at most 50,000 requests a file), each done 2 s after submission, 1% of their lines
  failed and asked again on the streaming path.
"""

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from alia.llm.simulated import SimulatedConfig, SimulatedServer

REPO = Path(__file__).resolve().parents[1]
CHAIN = ["sensor_discovery", "relevance_check", "kd_base", "kd_rephrase@toddler", "kd_rephrase@scholar",
         "kd_rephrase@wikipedia", "kd_rephrase@qa", "kd_qa", "kd_extend", "kg", "corpus_stats"]  # fmt: skip
LARGEST = "kd_extend"
FAULTS = SimulatedConfig(rate_429=0.05, rate_500=0.05, rate_timeout=0.01, rate_drop=0.01, rate_malformed=0.02)


def merged(base: dict, overlay: dict) -> dict:
    out = dict(base)
    for key, value in overlay.items():
        out[key] = (
            merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def scaled_params(scale: float, concurrency: int, base_url: str, faults: bool, batch: bool = False) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params = merged(params, yaml.safe_load((REPO / "configs/paper_scale.yaml").read_text()))
    teacher = {"base_url": base_url, "model": "simulated", "api_key_env": None, "concurrency": concurrency}
    if faults:  # the simulated server answers in milliseconds: a request unanswered for 5 s is lost
        teacher |= {"timeout": 5, "retries": 8}
    if batch:
        teacher |= {"batch": {"enabled": True, "poll_interval": 0.5}}
    params = merged(params, {"teacher": teacher})
    params["sensor_discovery"]["classes"] = max(1, round(params["sensor_discovery"]["classes"] * scale))
    params["kd_qa"]["documents"] = max(1, round(params["kd_qa"]["documents"] * scale))
    return params


def clone(workdir: Path, params: dict) -> None:
    subprocess.run(["git", "clone", "--quiet", "--local", str(REPO), str(workdir)], check=True)
    shutil.copytree(REPO / "data/tables", workdir / "data/tables")
    shutil.rmtree(workdir / "models/pretrained", ignore_errors=True)  # the clone's placeholder
    (workdir / "models/pretrained").symlink_to(REPO / "models/pretrained")
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stage_commands(workdir: Path) -> dict[str, tuple[str, list[str]]]:
    """Each chain stage's command line and output paths, as dvc resolves them."""
    from dvc.repo import Repo

    with Repo(str(workdir)) as repo:
        stages = {s.name: s for s in repo.index.stages}
        return {name: (stages[name].cmd, [str(o.def_path) for o in stages[name].outs]) for name in CHAIN}


def size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def cached_answers(cache: Path) -> int:
    try:
        with sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=10) as db:
            return db.execute("SELECT count(*) FROM responses").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def run_stage(cmd: str, workdir: Path, env: dict, log: Path, kill: tuple[Path, int] | None = None) -> tuple:
    """(seconds, exit status, rusage, killed) of one stage process; with `kill` (cache, answers),
    SIGKILL once that many answers are in the cache."""
    killed = False
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(
            cmd,
            shell=True,
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        while kill:  # reaped here, not by Popen, so that its rusage is ours to read
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:  # the stage finished first: nothing to kill
                break
            if cached_answers(kill[0]) >= kill[1]:
                os.killpg(process.pid, signal.SIGKILL)  # the shell and the stage it runs
                _, status, usage = os.wait4(process.pid, 0)
                killed = True
                break
            time.sleep(0.2)
        else:
            _, status, usage = os.wait4(process.pid, 0)
    return time.perf_counter() - start, status, usage, killed


def run_chain(workdir: Path, label: str, env: dict, kill_at: int = 0) -> list[dict]:
    rows = []
    (workdir / "logs").mkdir(exist_ok=True)
    for name, (cmd, outs) in stage_commands(workdir).items():
        log = workdir / "logs" / f"{name}.log"
        cache = next((workdir / o for o in outs if o.endswith(".sqlite")), None)
        row = {"stage": name}
        kill = (cache, kill_at) if name == LARGEST and kill_at else None
        seconds, status, usage, killed = run_stage(cmd, workdir, env, log, kill)
        if killed:  # then the same command again, as `dvc repro` would run it
            row |= {"killed_after_s": seconds, "cached_at_kill": cached_answers(cache)}
            print(f"  {label} {name}: SIGKILL after {seconds:.0f} s, {row['cached_at_kill']} answers cached")
            log.rename(log.with_suffix(".killed.log"))
            seconds, status, usage, _ = run_stage(cmd, workdir, env, log)
        if status != 0:
            sys.exit(f"{label}: {name} failed; see {log}")
        metrics_path = next(
            (workdir / o for o in outs if o.startswith("metrics/") and o.endswith(".json")), None
        )
        metrics = json.loads(metrics_path.read_text()) if metrics_path and metrics_path.exists() else {}
        # the client's counts of this run are the stage's printed {"run": ...} line, not its metrics file
        runs = [line for line in log.read_text().splitlines() if line.startswith('{"run": ')]
        teacher = json.loads(runs[-1])["run"].get("teacher", {}) if runs else {}
        teacher["reasks"], teacher["parse_failures"] = (
            metrics.get("teacher", {}).get(k, 0) for k in ("reasks", "parse_failures")
        )
        row |= {
            "seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "metrics": metrics,
            **{k: teacher.get(k, 0) for k in ("requests", "calls", "cache_hits", "retries", "reasks",
                                             "parse_failures", "batch_requests", "batch_failed")},
            "output_mb": sum(size(workdir / o) for o in outs if not o.endswith(".sqlite")) / 1e6,
            "cache_mb": size(cache) / 1e6 if cache else 0.0,
            "rows": {o: pq.read_table(workdir / o).num_rows for o in outs if o.endswith(".parquet")},
        }  # fmt: skip
        if "cached_at_kill" in row:
            row["cached_after"] = cached_answers(cache)
        rows.append(row)
        batched = f" ({row['batch_requests']} in batches)" if row["batch_requests"] else ""
        print(f"  {label} {name}: {seconds:.0f} s, {row['requests']} requests{batched}", flush=True)
    return rows


def dvc_warm_repro(workdir: Path, env: dict) -> float:
    """The chain recorded in dvc.lock as it stands, then `dvc repro` of it: seconds (nothing runs)."""
    dvc = [str(Path(sys.executable).parent / "dvc")]
    subprocess.run([*dvc, "commit", "-f", "-q", *CHAIN], cwd=workdir, env=env, check=True)
    start = time.perf_counter()
    out = subprocess.run([*dvc, "repro", "-s", *CHAIN], cwd=workdir, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    ran = [line for line in out.stdout.decode().splitlines() if line.startswith("Running stage")]
    if ran:
        sys.exit(f"dvc repro re-ran {ran} after dvc commit")
    return seconds


def report(label: str, cold: list[dict], warm: list[dict] | None, server: dict) -> None:
    print(f"\n{label}")
    header = ["stage", "requests", "batched", "retries", "reasks", "cold s", "warm s", "req/s",
              "client ms/req", "warm calls", "peak RSS MB", "output MB", "cache MB"]  # fmt: skip
    print(f"{header[0]:<24}" + "".join(f"{h:>14}" for h in header[1:]))
    for c, w in zip(cold, warm or [{}] * len(cold), strict=True):
        # the warm run's time is the stage's own work, so the teacher's share of the cold run is
        # the difference; client ms/request: the cold run's teacher time per request, all of it the
        # client's where the server is faster than the client
        teacher_s = c["seconds"] - w.get("seconds", 0)
        rate = c["requests"] / teacher_s if c["requests"] and w and teacher_s > 0 else 0
        rss = max(c["peak_rss_mb"], w.get("peak_rss_mb", 0))
        values = [c["requests"], c["batch_requests"], c["retries"], c["reasks"], f"{c['seconds']:.1f}",
                  f"{w.get('seconds', 0):.1f}", f"{rate:.0f}", f"{1000 / rate if rate else 0:.2f}",
                  w.get("calls", 0), f"{rss:.0f}",
                  f"{c['output_mb']:.1f}", f"{c['cache_mb']:.1f}"]  # fmt: skip
        print(f"{c['stage']:<24}" + "".join(f"{v:>14}" for v in values))
    cold_s, warm_s = sum(c["seconds"] for c in cold), sum(w["seconds"] for w in warm or [])
    print(f"{'chain':<24}{sum(c['requests'] for c in cold):>14}{sum(c['batch_requests'] for c in cold):>14}"
          f"{sum(c['retries'] for c in cold):>14}"
          f"{sum(c['reasks'] for c in cold):>14}{cold_s:>14.1f}{warm_s:>14.1f}{'':>28}"
          f"{sum(w['calls'] for w in warm or []):>14}"
          f"{max(r['peak_rss_mb'] for r in cold + (warm or [])):>14.0f}")  # fmt: skip
    print(f"server: {server}")
    for c in cold:
        if "cached_at_kill" in c:
            print(f"{c['stage']}: SIGKILL after {c['killed_after_s']:.0f} s with {c['cached_at_kill']:,} "
                  f"answers cached; the re-run made {c['calls']:,} calls ({c['cached_after']:,} answers "
                  f"cached in all), read {c['cache_hits']:,} from the cache; the server answered "
                  f"{server['answered_twice']} requests twice")  # fmt: skip
    rows = {o: n for c in cold for o, n in c["rows"].items()}
    print("rows: " + ", ".join(f"{Path(o).stem} {n:,}" for o, n in rows.items()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--kill-at", type=int, default=0, help=f"SIGKILL {LARGEST} at this many answers")
    parser.add_argument("--faults", action="store_true")
    parser.add_argument("--batch", action="store_true", help="the teacher in batch mode (Batch API jobs)")
    parser.add_argument("--no-warm", action="store_true")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="alia-paper-scale-"))
    for scale in args.scale:
        workdir = root / f"scale-{scale:g}{'-faults' if args.faults else ''}{'-batch' if args.batch else ''}"
        print(f"scale {scale:g}: {workdir}", flush=True)
        server_config = FAULTS if args.faults else SimulatedConfig()
        if args.batch:
            server_config = server_config.model_copy(update={"batch_delay": 2.0, "rate_batch_failed": 0.01})
        with SimulatedServer(server_config, root / "server.log") as server:
            clone(workdir, scaled_params(scale, args.concurrency, server.base_url, args.faults, args.batch))
            # the clone's own code, not the work tree's that the editable install points at
            env = os.environ | {
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                "PYTHONPATH": str(workdir / "src"),
            }
            cold = run_chain(workdir, f"scale {scale:g}, cold", env, args.kill_at)
            cold_stats = server.stats()
            warm = None
            if not args.no_warm:
                warm = run_chain(workdir, f"scale {scale:g}, warm", env)
        report(f"scale {scale:g}", cold, warm, cold_stats)
        if warm:
            print(f"dvc repro (recorded chain, nothing changed): {dvc_warm_repro(workdir, env):.1f} s")


if __name__ == "__main__":
    main()
