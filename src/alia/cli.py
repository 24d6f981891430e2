"""The `alia` command. Pipeline stages run through `dvc repro`; this is for looking around."""

from __future__ import annotations

import argparse
import json
import os
import sys


def ask_defaults(dvc_file: str = "dvc.yaml") -> dict[str, str | None]:
    """The pipeline outputs `alia ask` and `alia eval-agent` read by default: the paths on stage
    eval_agent's command line (dvc.yaml, in the current folder, is their one home); none where there is
    no dvc.yaml."""
    import shlex
    from pathlib import Path

    import yaml

    names = ["embedder", "pretrained", "tasks", "descriptions", "vocabulary", "rules"]
    path = Path(dvc_file)
    if not path.exists():
        return dict.fromkeys(names)
    stages = yaml.safe_load(path.read_text())
    command = shlex.split(stages["stages"]["eval_agent"]["cmd"])
    # python stages/eval_agent.py <embedder> <pretrained> <tasks> <descriptions> <vocabulary> <rules> ...
    values = dict(zip(names, command[2:8], strict=True))
    params = path.with_name("params.yaml")
    if "${train_embedder.pretrained}" in values["pretrained"] and params.exists():  # dvc's templating
        chosen = yaml.safe_load(params.read_text())["train_embedder"]["pretrained"]
        values["pretrained"] = values["pretrained"].replace("${train_embedder.pretrained}", chosen)
    return values


def cmd_info(args: argparse.Namespace) -> int:
    """Where alia keeps things on this machine."""
    import alia
    from alia.core.tracking import repo_root, tracking_uri

    info = {"version": alia.__version__, "repo_root": str(repo_root()), "mlflow_tracking_uri": tracking_uri()}
    print(json.dumps(info, indent=2))
    return 0


def cmd_mcqa(args: argparse.Namespace) -> int:
    """Load FailureSensorIQ-format questions (a local .jsonl or the published dataset) into Parquet."""
    from alia.core.io import write_parquet
    from alia.student.failuresensoriq import load_mcqa

    questions = load_mcqa(args.source, revision=args.revision)
    if args.out:
        write_parquet(questions, args.out)
    by_asset = questions["asset_name"].value_counts().to_dict()
    print(json.dumps({"questions": len(questions), "by_asset": by_asset}, indent=2))
    return 0


def cmd_kg(args: argparse.Namespace) -> int:
    """Print a node's neighbours in the knowledge graph."""
    from alia.data.kg import KnowledgeGraph

    kg = KnowledgeGraph.read(args.kg_dir)
    if args.node not in kg:
        print(
            f"no node {args.node!r}; node ids look like 'sensor:vibration' or 'asset:Pump'", file=sys.stderr
        )
        return 2
    for dst, data in kg.edges_from(args.node):
        context = f" [{data['asset']}]" if data["asset"] else ""
        print(f"{data['type']:<13} {dst}{context}  ({data['source']}: {data['origin']})")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    """Ask the maintenance agent (params.yaml `agent:`); prints its answer, and with --trace its steps."""
    from pathlib import Path

    from alia.agent.react import agent_from_params, run_agent, tools_from_params, write_trace
    from alia.core.params import load_params

    params = load_params("agent")
    needed = [args.embedder, args.tasks] + ([args.descriptions] if params["augment"] else [])
    if None in needed:
        print(
            "no dvc.yaml here: run `alia ask` in the repository, or give --embedder, --tasks, --descriptions",
            file=sys.stderr,
        )
        return 2
    for path in needed:
        if not Path(path).exists():
            print(f"{path} is missing: run `dvc repro train_embedder` (or `dvc pull`) first", file=sys.stderr)
            return 2
    tools = tools_from_params(params, args.embedder, args.tasks, args.descriptions)
    agent, llm = agent_from_params(params, tools, args.cache)
    with llm:
        run = run_agent(agent, args.question)
    write_trace(args.trace_file, run.trace, append=True)  # every question's trace, one record per step
    if args.trace:
        for record in run.trace[1:-1]:
            print(json.dumps(record, default=str))
    if run.state != "success":  # what it holds then is the last action, not an answer
        print(
            f"no answer within {params['max_steps']} steps ({run.state}: the agent never called "
            "final_answer); --trace shows its steps",
            file=sys.stderr,
        )
        return 1
    print(run.answer)
    return 0


def cmd_eval_agent(args: argparse.Namespace) -> int:
    """Evaluate the agent on a scenario file (AssetOpsBench's schema): the oracle policies where the
    scenarios carry gold tool arguments, the LLM alone and the ReAct agent, as stage eval_agent does."""
    from pathlib import Path

    from alia.agent import evaluation
    from alia.agent.react import agent_from_params, tools_from_params
    from alia.agent.scenarios import read_scenarios
    from alia.agent.scoring import ItemMatcher
    from alia.core.io import write_json, write_parquet
    from alia.core.params import load_params
    from alia.llm.prompts import load_prompt

    params, settings = load_params("agent"), load_params("eval_agent")
    scenarios = read_scenarios(args.scenarios)
    models = {"": args.embedder, "_pretrained": args.pretrained, "_bm25": None}
    oracles = {
        suffix: tools_from_params(params, model, args.tasks, args.descriptions)
        for suffix, model in models.items()
    }
    agent, llm = agent_from_params(params, oracles[""], args.cache)
    with llm:
        scored, trace = evaluation.evaluate_systems(
            scenarios, oracles, llm, load_prompt("agent_closed_book"), settings["closed_book_max_tokens"],
            agent, evaluation.subset(scenarios, args.react_per_kind, settings["seed"]),
            ItemMatcher.from_files(args.tasks, args.vocabulary, args.rules),
        )  # fmt: skip
    out = Path(args.out)
    metrics = {"scenarios": str(args.scenarios), "questions": len(scenarios)} | evaluation.evaluation_metrics(
        scored
    )
    write_parquet(scored, out / "answers.parquet")
    write_json(out / "agent.json", metrics)
    for name, result in metrics["systems"].items():
        o = result["overall"]
        print(f"{name:<18} n={o['questions']:<4} F1 {o['f1']:.3f} {o['f1_ci95']}  recall {o['recall']:.3f}  "
              f"precision {o['precision']:.3f}")  # fmt: skip
    print(f"answers and metrics in {out}/")
    return 0


def cmd_exp_run(args: argparse.Namespace) -> int:
    """`dvc exp run` with every setting of a params overlay file (configs/*.yaml) as `-S key=value`."""
    import subprocess

    from alia.core.params import overlay_args

    command = ["dvc", "exp", "run", *overlay_args(args.overlay), *args.dvc_args]
    print(" ".join(command), file=sys.stderr)
    return subprocess.call(command)


def cmd_exp_sweeps(args: argparse.Namespace) -> int:
    """Collect the embedder sweeps' experiments (`make sweeps`) into DVC plots and a Markdown table."""
    from alia.embedder.sweeps import collect

    points = collect(args.out)
    print(json.dumps(points))
    empty = [sweep for sweep, n in points.items() if not n]
    if empty:
        print(
            f"no experiments to collect for {', '.join(empty)} (run `make sweeps` first): "
            f"{args.out}/ left as it was for them",
            file=sys.stderr,
        )
    print(f"plots: {args.out}/*.json (dvc plots show); table: {args.out}/sweeps.md", file=sys.stderr)
    return 0 if all(points.values()) else 1


def cmd_exp_queue_sweeps(args: argparse.Namespace) -> int:
    """Queue the embedder sweeps as DVC experiments (alia.embedder.sweeps.QUEUE; `make sweeps`)."""
    import shlex
    import subprocess

    from alia.embedder.sweeps import queue_commands

    for command in queue_commands():
        print(shlex.join(command), file=sys.stderr)
        if not args.dry_run and subprocess.call(command):
            return 1
    return 0


def cmd_exp_transfer(args: argparse.Namespace) -> int:
    """Run the transfer rung (configs/transfer/cpu.yaml, docs/student.md): oracle facts of some assets,
    students scored on the others'; resumes an interrupted run."""
    from alia.student.transfer_run import run

    summary = run(args.config, args.out)
    print(json.dumps({name: r["vs_untuned"] for name, r in summary["results"].items()}))
    print(f"table: {args.out}/transfer.md", file=sys.stderr)
    return 0


def cmd_plots_page(args: argparse.Namespace) -> int:
    """Write the offline HTML page that `dvc plots show` fills (.dvc/config plots.html_template)."""
    from alia.core.io import write_text
    from alia.pages import offline_page

    write_text(args.out, offline_page())
    return 0


# Long because it is the whole argument parser, one subcommand after another.
def main(argv: list[str] | None = None) -> int:
    from alia.core import errors

    errors.install()
    parser = argparse.ArgumentParser(prog="alia", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help=cmd_info.__doc__).set_defaults(func=cmd_info)
    mcqa = sub.add_parser("mcqa", help=cmd_mcqa.__doc__)
    mcqa.add_argument("source", help="a .jsonl path, or hub[:<config>] for ibm-research/FailureSensorIQ")
    mcqa.add_argument("--revision", help="hub revision (commit, tag or branch)")
    mcqa.add_argument("--out", help="write the questions to this Parquet file")
    mcqa.set_defaults(func=cmd_mcqa)
    kg = sub.add_parser("kg", help=cmd_kg.__doc__)
    kg.add_argument("node", help="a node id, e.g. 'sensor:vibration'")
    kg.add_argument("--kg-dir", default="data/kg")
    kg.set_defaults(func=cmd_kg)
    ask = sub.add_parser("ask", help=cmd_ask.__doc__)
    ask.add_argument(
        "question", help='e.g. "High temperature on a compressor: which components may be failing?"'
    )
    ask.add_argument(
        "--trace", action="store_true", help="also print every thought, tool call and observation"
    )
    ask.add_argument("--trace-file", default="logs/agent_trace.jsonl", help="JSONL the trace is appended to")
    ask.add_argument("--cache", default="logs/agent_cache.sqlite", help="the LLM's response cache for `ask`")
    # the pipeline's outputs, as dvc.yaml's eval_agent stage names them
    defaults = ask_defaults()
    ask.add_argument("--embedder", default=defaults.get("embedder"), help="the fine-tuned embedder")
    ask.add_argument("--tasks", default=defaults.get("tasks"), help="embed_tasks' tasks.parquet")
    ask.add_argument("--descriptions", default=defaults.get("descriptions"), help="its descriptions.parquet")
    ask.set_defaults(func=cmd_ask)
    evaluate = sub.add_parser("eval-agent", help=cmd_eval_agent.__doc__)
    evaluate.add_argument("scenarios", help="a JSONL (or JSON list) of scenarios: id, text, answer, ...")
    evaluate.add_argument("--out", default="logs/eval_agent", help="where answers.parquet and agent.json go")
    evaluate.add_argument(
        "--react-per-kind", type=int, help="the ReAct agent on this many a kind (all if left out)"
    )
    evaluate.add_argument("--cache", default="logs/agent_cache.sqlite", help="the LLM's response cache")
    for name, value in defaults.items():  # the pipeline's outputs, as for `ask`
        evaluate.add_argument(f"--{name}", default=value, help=f"as stage eval_agent's <{name}>")
    evaluate.set_defaults(func=cmd_eval_agent)
    exp = sub.add_parser("exp", help="experiments with a params overlay file")
    exp_commands = exp.add_subparsers(dest="exp_command", required=True)
    exp_run = exp_commands.add_parser(
        "run",
        help=cmd_exp_run.__doc__,
        description=cmd_exp_run.__doc__ + " Further arguments go to dvc exp run, e.g. -n NAME, --queue.",
    )
    exp_run.add_argument("overlay", help="a YAML file shaped like params.yaml, e.g. configs/full_size.yaml")
    exp_run.set_defaults(func=cmd_exp_run)
    sweeps = exp_commands.add_parser("sweeps", help=cmd_exp_sweeps.__doc__)
    sweeps.add_argument("--out", default="metrics/sweeps", help="where the plot files and table go")
    sweeps.set_defaults(func=cmd_exp_sweeps)
    queue = exp_commands.add_parser("queue-sweeps", help=cmd_exp_queue_sweeps.__doc__)
    queue.add_argument("--dry-run", action="store_true", help="print the dvc commands, queue nothing")
    queue.set_defaults(func=cmd_exp_queue_sweeps)
    transfer = exp_commands.add_parser("transfer", help=cmd_exp_transfer.__doc__)
    transfer.add_argument("config", nargs="?", default="configs/transfer/cpu.yaml")
    transfer.add_argument(
        "--out", "-o", default="metrics/transfer", help="where transfer.json and transfer.md go"
    )
    transfer.set_defaults(func=cmd_exp_transfer)
    page = sub.add_parser("plots-page", help=cmd_plots_page.__doc__)
    page.add_argument("out", help="e.g. .dvc/offline_plots.html")
    page.set_defaults(func=cmd_plots_page)
    args, rest = parser.parse_known_args(argv)
    args.dvc_args = rest  # what `alia` does not know goes to `dvc exp run`
    if args.dvc_args and args.func is not cmd_exp_run:
        parser.error(f"unrecognized arguments: {' '.join(args.dvc_args)}")
    try:
        return args.func(args)
    except BrokenPipeError:  # `alia kg ... | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
