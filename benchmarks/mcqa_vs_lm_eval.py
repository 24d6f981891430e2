"""The MCQA scorer against lm-evaluation-harness: the same model and the same questions through
alia.student.scoring and through lm-eval (a custom multiple_choice task over the same Parquet), side by side.
Prints acc and acc_norm from both, how many questions get the same picks, questions/s and the ratio;
then letter mode: alia's one forward pass per question against lm-eval scoring each option's letter
as a one-token continuation of the lettered prompt (its multiple_choice over the labels).

    python benchmarks/mcqa_vs_lm_eval.py [--model models/pretrained/student_instruct]
        [--questions data/eval/questions/d_eval.parquet] [--sample 400] [--dtype float32]
        [--batch-size 8]

Both score the exact same context strings (k-shot or chat-formatted, built by alia.student.scoring) with the
option text (or letter) as continuation; lm-eval needs `pip install lm-eval` (in the dev extra).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from alia.student.engine import load_model
from alia.student.formats import build_prompts, prompt_style
from alia.student.questions import stratified_sample
from alia.student.scoring import choose, letter_picks, option_loglikelihoods

TASK = """\
task: alia_mcqa
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: options
doc_to_target: answer_index
target_delimiter: {delimiter}
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def alia_scores(
    model_dir: str, questions: pd.DataFrame, dtype: str, batch_size: int
) -> tuple[pd.DataFrame, float]:
    model, tokenizer = load_model(model_dir, dtype)
    style = prompt_style(tokenizer)
    rows = build_prompts(questions, style, tokenizer)
    start = time.perf_counter()
    lls = option_loglikelihoods(model, tokenizer, rows, style, batch_size)
    seconds = time.perf_counter() - start
    picks = [choose(ll, list(o)) for ll, o in zip(lls, rows["options"], strict=True)]
    rows["pred"], rows["pred_norm"] = zip(*picks, strict=True)
    rows["lls"] = lls
    rows["delimiter"] = style.delimiter
    return rows, seconds


def alia_letters(model_dir: str, rows: pd.DataFrame, dtype: str, batch_size: int) -> tuple[list, float]:
    model, tokenizer = load_model(model_dir, dtype)
    start = time.perf_counter()
    picked = letter_picks(model, tokenizer, rows, prompt_style(tokenizer), batch_size)
    return [p[0] for p in picked["letter_pred"]], time.perf_counter() - start


def lm_eval_scores(
    model_dir: str, rows: pd.DataFrame, dtype: str, batch_size: int
) -> tuple[pd.DataFrame, float]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model = HFLM(pretrained=model_dir, dtype=dtype, batch_size=batch_size, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "questions.parquet"
        rows[["id", "context", "options", "answer_index"]].to_parquet(data, index=False)
        delimiter = json.dumps(rows["delimiter"].iloc[0])  # a YAML string, quoted: " " or ""
        (Path(tmp) / "alia_mcqa.yaml").write_text(TASK.format(data=data, delimiter=delimiter))
        start = time.perf_counter()
        results = lm_eval.simple_evaluate(
            model=model, tasks=["alia_mcqa"], task_manager=TaskManager(include_path=tmp), log_samples=True
        )
        seconds = time.perf_counter() - start
    samples = sorted(results["samples"]["alia_mcqa"], key=lambda s: s["doc_id"])
    lls = [np.array([r[0][0] for r in s["resps"]]) for s in samples]
    picks = [choose(ll, list(s["doc"]["options"])) for ll, s in zip(lls, samples, strict=True)]
    scored = pd.DataFrame(picks, columns=["pred", "pred_norm"])
    scored["lls"] = lls
    scored["acc_reported"] = results["results"]["alia_mcqa"]["acc,none"]
    scored["acc_norm_reported"] = results["results"]["alia_mcqa"]["acc_norm,none"]
    return scored, seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="models/pretrained/student_instruct")
    parser.add_argument("--questions", default="data/eval/questions/d_eval.parquet")
    parser.add_argument("--sample", type=int, default=400, help="stratified sample (0: every question)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    questions = stratified_sample(pd.read_parquet(args.questions), args.sample)
    ours, ours_s = alia_scores(args.model, questions, args.dtype, args.batch_size)
    theirs, theirs_s = lm_eval_scores(args.model, ours, args.dtype, args.batch_size)
    gold = ours["answer_index"].to_numpy()
    n = len(questions)
    print(f"\n{args.model} ({args.dtype}), {n} questions of {args.questions}, batch {args.batch_size}")
    print(f"{'':16}{'alia.student.scoring':>14}{'lm-eval':>14}")
    print(f"{'acc':16}{np.mean(ours['pred'] == gold):>14.4f}{theirs['acc_reported'][0]:>14.4f}")
    print(
        f"{'acc_norm':16}{np.mean(ours['pred_norm'] == gold):>14.4f}{theirs['acc_norm_reported'][0]:>14.4f}"
    )
    print(f"{'questions/s':16}{n / ours_s:>14.2f}{n / theirs_s:>14.2f}")
    print(
        f"same acc pick on {np.sum(ours['pred'].to_numpy() == theirs['pred'].to_numpy())}/{n} questions, "
        f"same acc_norm pick on {np.sum(ours['pred_norm'].to_numpy() == theirs['pred_norm'].to_numpy())}/{n}"
    )
    diff = max(np.abs(a - b).max() for a, b in zip(ours["lls"], theirs["lls"], strict=True))
    print(f"largest difference of an option's log-likelihood: {diff:.2e} nats")
    print(
        f"speed ratio alia/lm-eval: {(n / ours_s) / (n / theirs_s):.2f}x "
        "(both load the model outside the timing; lm-eval's includes building its task)"
    )
    # letter mode: the lettered prompt, each label a one-token continuation
    lettered = ours.assign(context=ours["prompt"], options=ours["option_ids"])
    letters, letters_s = alia_letters(args.model, ours, args.dtype, args.batch_size)
    theirs_letters, theirs_letters_s = lm_eval_scores(args.model, lettered, args.dtype, args.batch_size)
    same = int(np.sum(np.array(letters) == theirs_letters["pred"].to_numpy()))
    print(f"\nletter mode{'':5}{'alia.student.scoring':>14}{'lm-eval':>14}")
    print(f"{'acc':16}{np.mean(np.array(letters) == gold):>14.4f}{theirs_letters['acc_reported'][0]:>14.4f}")
    print(f"{'questions/s':16}{n / letters_s:>14.2f}{n / theirs_letters_s:>14.2f}")
    print(
        f"same letter pick on {same}/{n} questions; "
        f"speed ratio alia/lm-eval: {theirs_letters_s / letters_s:.2f}x"
    )


if __name__ == "__main__":
    main()
