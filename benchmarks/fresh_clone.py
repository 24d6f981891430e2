"""A fresh clone, timed: `make install`, `make repro` per stage, a second `dvc repro`, and `make test`;
writes docs/timings.md (the one place timings are kept) and compares every output of the new
dvc.lock with the repository's own.

    python benchmarks/fresh_clone.py [--rev HEAD] [--workdir DIR] [--no-test] [--empty-pip-cache]
        [--timings docs/timings.md]

The clone shares nothing with the repository but pip's cache (with --empty-pip-cache, not even that:
every package is downloaded and llama-cpp-python compiled): it is what a new user gets. The page
names the machine: cores and torch's CPU capability, which decides the precision (alia.core.precision).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def timed(
    command: list[str], cwd: Path, log: Path, extra_env: dict[str, str] | None = None
) -> tuple[float, list[tuple[float, str]]]:
    """Run `command`, its output to `log`; (seconds, [(seconds since start, line)])."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MLFLOW_TRACKING_URI")}
    env |= extra_env or {}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    start, lines = time.monotonic(), []
    with open(log, "a") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in process.stdout:
            out.write(line)
            lines.append((time.monotonic() - start, line.rstrip()))
    if process.wait() != 0:
        sys.exit(f"{' '.join(command)} failed with code {process.returncode}; see {log}")
    return time.monotonic() - start, lines


def stage_seconds(lines: list[tuple[float, str]], total: float) -> dict[str, float]:
    """Seconds per stage, from the time DVC announced it to the next announcement (or the end)."""
    starts = [(t, m[1]) for t, line in lines if (m := re.match(r"Running stage '([^']+)'", line))]
    ends = [t for t, _ in starts[1:]] + [total]
    return {stage: end - t for (t, stage), end in zip(starts, ends, strict=True)}


def outputs(lock_file: Path) -> dict[str, str]:
    """Every output of a dvc.lock with its md5."""
    lock = yaml.safe_load(lock_file.read_text())
    return {o["path"]: o.get("md5", "") for s in lock["stages"].values() for o in s.get("outs", [])}


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rev", default="HEAD", help="the commit to clone")
    parser.add_argument("--workdir", type=Path, help="where to clone (default: a new temporary folder)")
    parser.add_argument("--no-test", action="store_true", help="skip `make test`")
    parser.add_argument(
        "--empty-pip-cache", action="store_true", help="install with a new, empty pip cache (PIP_CACHE_DIR)"
    )
    parser.add_argument("--timings", type=Path, default=REPO / "docs" / "timings.md")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="alia-fresh-"))
    clone, log = workdir / "alia", workdir / "fresh_clone.log"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", args.rev], cwd=clone, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True
    )
    print(f"clone of {commit.stdout.strip()} in {clone}; log: {log}", flush=True)

    pip_env = {"PIP_CACHE_DIR": str(workdir / "pip-cache")} if args.empty_pip_cache else {}
    install, _ = timed(["make", "install"], clone, log, pip_env)
    cache = "an empty" if args.empty_pip_cache else "a warm"
    print(f"make install: {install:.0f} s with {cache} pip cache", flush=True)
    capability = subprocess.run(
        [clone / ".venv" / "bin" / "python", "-c", "from alia.core.precision import device, resolve_dtype;"
         "print(device(), resolve_dtype('auto'))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    repro, lines = timed(["make", "repro"], clone, log)
    per_stage = stage_seconds(lines, repro)
    # stages whose outputs are committed metrics only: DVC skips them when every input hashes as in dvc.lock
    skipped = [m[1] for _, line in lines if (m := re.match(r"Stage '([^']+)' didn't change, skipping", line))]
    print(f"make repro: {repro:.0f} s, {len(per_stage)} stages", flush=True)
    again, lines = timed(["make", "repro"], clone, log)
    reran = [line for _, line in lines if line.startswith("Running stage")]
    print(f"second make repro: {again:.0f} s, stages re-run: {reran or 'none'}", flush=True)
    test = summary = None
    if not args.no_test:
        test, lines = timed(["make", "test"], clone, log)
        summary = next((line.strip("= ") for _, line in reversed(lines) if " passed" in line), "")
        print(f"make test: {test:.0f} s ({summary})", flush=True)

    # Stages of one foreach (train_student@kd_qa, ...) are summed under their name.
    groups: dict[str, list[float]] = defaultdict(list)
    for stage, seconds in per_stage.items():
        groups[stage.split("@")[0]].append(seconds)
    rows = [(f"`make install` (venv, alia, offline models; {cache} pip cache)", install)]
    rows += [
        (f"`{name}`" + (f" ({len(s)} runs)" if len(s) > 1 else ""), sum(s)) for name, s in groups.items()
    ]
    rows += [("**`make repro` in all** (install, then every stage)", install + repro)]
    rows += [("a second `make repro` (nothing to do)", again)]
    if test is not None:
        rows += [(f"`make test` ({summary})", test)]
    page = [
        "# Timings",
        "",
        "Use this page to budget a run: what each part of a fresh clone's `make repro` and `make test` took",
        "on this project's 2-core CPU machine (`python benchmarks/fresh_clone.py` clones the repository,",
        "times the same steps and rewrites this page).",
        "",
        f"Commit {commit.stdout.strip()}, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, torch's CPU"
        f" capability `{capability[0]}`: the default (`auto`) trains and scores in {capability[1]}.",
        "",
        "| part | seconds | minutes |",
        "|---|---|---|",
        *[f"| {name} | {seconds:.0f} | {minutes(seconds)} |" for name, seconds in rows],
        "",
    ]
    if skipped:
        page += [
            f"Not run: {', '.join(f'`{s}`' for s in skipped)}. Their outputs are committed metrics, and"
            " every",
            "input they read came out byte-identical to the committed dvc.lock, so DVC had nothing to do.",
            "",
        ]
    args.timings.write_text("\n".join(page))
    print(f"wrote {args.timings}")

    ours, theirs = outputs(clone / "dvc.lock"), outputs(REPO / "dvc.lock")
    same = sorted(p for p in ours if theirs.get(p) == ours[p])
    differ = sorted(p for p in ours if p in theirs and theirs[p] != ours[p])
    new = sorted(set(ours) - set(theirs))
    print(
        f"\noutputs against {REPO / 'dvc.lock'}: {len(same)} identical, {len(differ)} differ, {len(new)} new"
    )
    for path in differ:
        print(f"  differs: {path}")
    for path in new:
        print(f"  new:     {path}")
    # how far the committed metrics moved: on another machine the local teacher writes other facts and
    # corpora (docs/teacher.md), and every figure downstream follows
    diff = subprocess.run(
        [clone / ".venv" / "bin" / "dvc", "metrics", "diff", "--md"], cwd=clone,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    (workdir / "metrics_diff.md").write_text(diff)
    print(
        f"metrics against the committed ones: {workdir / 'metrics_diff.md'} ({len(diff.splitlines())} lines)"
    )


if __name__ == "__main__":
    main()
