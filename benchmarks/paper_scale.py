"""The teacher chain at the ALIA paper's volumes, rehearsed against the simulated teacher
(alia.simulated_teacher): configs/paper_scale.yaml with `teacher.base_url: simulated`, at the given
scales (1.0: all 44 classes; 0.1: 4 of them and a tenth of the documents asked about), each cold
(an empty response cache) and then warm (every answer cached).

    python benchmarks/paper_scale.py [--scale 0.1 1.0] [--workdir DIR] [--concurrency 64]

Each run works in its own clone of the repository (the tables and the pretrained tokenizers copied
in) and runs the stages' own command lines from dvc.yaml, sensor_discovery through corpus_stats, one
process each. Per stage it prints the requests the teacher sent, wall time, requests/s, peak RSS of
the stage's process, and the sizes of its outputs and response cache. The warm run's wall time is the
stage's non-teacher time (its answers come from the cache at tens of thousands a second), so the
cold run's teacher time is the difference, and requests/s are counted over it.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CHAIN = ["sensor_discovery", "relevance_check", "kd_base", "kd_rephrase@toddler", "kd_rephrase@scholar",
         "kd_rephrase@wikipedia", "kd_rephrase@qa", "kd_qa", "kd_extend", "kg", "corpus_stats"]  # fmt: skip


def merged(base: dict, overlay: dict) -> dict:
    out = dict(base)
    for key, value in overlay.items():
        out[key] = (
            merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def scaled_params(scale: float, concurrency: int) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params = merged(params, yaml.safe_load((REPO / "configs/paper_scale.yaml").read_text()))
    params = merged(
        params, {"teacher": {"base_url": "simulated", "model": "simulated", "concurrency": concurrency}}
    )
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


def run_chain(workdir: Path, label: str) -> list[dict]:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    rows = []
    for name, (cmd, outs) in stage_commands(workdir).items():
        log = workdir / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        start = time.perf_counter()
        with open(log, "w") as out:
            process = subprocess.Popen(
                cmd, shell=True, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT
            )
            _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        if status != 0:
            sys.exit(f"{label}: {name} failed; see {log}")
        metrics_path = next(
            (workdir / o for o in outs if o.startswith("metrics/") and o.endswith(".json")), None
        )
        metrics = json.loads(metrics_path.read_text()) if metrics_path and metrics_path.exists() else {}
        teacher = metrics.get("teacher", {})
        cache = next((workdir / o for o in outs if o.endswith(".sqlite")), None)
        rows.append({
            "stage": name, "seconds": seconds, "requests": teacher.get("requests", 0),
            "calls": teacher.get("calls", 0),
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "output_mb": sum(size(workdir / o) for o in outs if not o.endswith(".sqlite")) / 1e6,
            "cache_mb": size(cache) / 1e6 if cache else 0.0,
        })  # fmt: skip
        print(f"  {label} {name}: {seconds:.0f} s, {rows[-1]['requests']} requests", flush=True)
    return rows


def report(label: str, cold: list[dict], warm: list[dict]) -> None:
    print(f"\n{label}")
    header = [
        "stage",
        "requests",
        "cold s",
        "warm s",
        "req/s",
        "warm calls",
        "peak RSS MB",
        "output MB",
        "cache MB",
    ]
    print(f"{header[0]:<24}" + "".join(f"{h:>12}" for h in header[1:]))
    for c, w in zip(cold, warm, strict=True):
        teacher_s = c["seconds"] - w["seconds"]
        rate = c["requests"] / teacher_s if c["requests"] and teacher_s > 0 else 0
        rss = max(c["peak_rss_mb"], w["peak_rss_mb"])
        print(f"{c['stage']:<24}{c['requests']:>12}{c['seconds']:>12.1f}{w['seconds']:>12.1f}{rate:>12.0f}"
              f"{w['calls']:>12}{rss:>12.0f}{c['output_mb']:>12.1f}{c['cache_mb']:>12.1f}")  # fmt: skip
    print(f"{'chain':<24}{sum(c['requests'] for c in cold):>12}{sum(c['seconds'] for c in cold):>12.1f}"
          f"{sum(w['seconds'] for w in warm):>12.1f}{'':>12}{sum(w['calls'] for w in warm):>12}"
          f"{max(r['peak_rss_mb'] for r in cold + warm):>12.0f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="alia-paper-scale-"))
    for scale in args.scale:
        workdir = root / f"scale-{scale:g}"
        print(f"scale {scale:g}: {workdir}", flush=True)
        clone(workdir, scaled_params(scale, args.concurrency))
        cold = run_chain(workdir, f"scale {scale:g}, cold")
        warm = run_chain(workdir, f"scale {scale:g}, warm")
        report(f"scale {scale:g}", cold, warm)


if __name__ == "__main__":
    main()
