"""The MCQA scorer: known log-likelihoods and letter log-probabilities, lm-eval's acc/acc_norm,
undecided answers, cluster-bootstrap intervals, McNemar, summaries and the comparison table."""

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from alia.student.engine import encode_pair, label_token, load_model, loglikelihoods, next_token_logprobs
from alia.student.formats import PromptStyle, build_prompts, fewshot_indices, prompt_style
from alia.student.questions import build_questions, load_question_set, stratified_sample
from alia.student.scoring import choose, compare, read_letter, score_questions, summarise
from alia.student.stats import bootstrap_ci, bootstrap_means, mcnemar_p, paired_difference
from alia.student.summary import summary_table

PAIRS = [
    ("Question: Which sensor detects bearing damage in a pump?\nAnswer:", " vibration"),
    ("Question: Which sensor detects bearing damage in a pump?\nAnswer:", " oil debris / wear particles"),
    ("Question: Which failure mode shows up in current?\nAnswer: ", "rotor bar damage"),
    ("Short:", " x"),
]


@pytest.fixture(scope="module")
def uniform_lm(tiny_lm, tmp_path_factory):
    """The tiny model with a zero output layer: every token has probability 1/V, whatever came before."""
    out = tmp_path_factory.mktemp("uniform_lm")
    shutil.copytree(tiny_lm, out, dirs_exist_ok=True)
    model, tokenizer = load_model(out, "float32")
    torch.nn.init.zeros_(model.lm_head.weight)
    model.save_pretrained(out)
    return out


def test_known_loglikelihoods_of_a_uniform_model(uniform_lm):
    model, tokenizer = load_model(uniform_lm, "float32")
    scores = loglikelihoods(model, tokenizer, PAIRS, batch_size=3)
    log_v = math.log(model.config.vocab_size)
    n_tokens = [len(encode_pair(tokenizer, c, x)[1]) for c, x in PAIRS]
    assert n_tokens[0] >= 1 and n_tokens[1] > n_tokens[0]
    np.testing.assert_allclose(scores, [-n * log_v for n in n_tokens], rtol=1e-5)


# the same pairs behind a long preamble: the part every context shares runs once, as a chat
# template's system turn does
PREAMBLE = "You answer questions about industrial condition monitoring, one option at a time.\n"


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("pairs", [PAIRS, [(PREAMBLE + c, x) for c, x in PAIRS]])
def test_packed_scores_equal_one_sequence_at_a_time(tiny_lm, pairs, batch_size):
    """A context's options are packed behind it in one row, rows of different lengths share a pass;
    each score is still that of its own sequence."""
    model, tokenizer = load_model(tiny_lm, "float32")
    batched = loglikelihoods(model, tokenizer, pairs, batch_size=batch_size)
    for (context, continuation), score in zip(pairs, batched, strict=True):
        context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
        ids = torch.tensor([context_ids + continuation_ids])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0, :-1], -1)
        expected = (
            logprobs[-len(continuation_ids) :].gather(-1, torch.tensor(continuation_ids)[:, None]).sum()
        )
        assert score == pytest.approx(expected.item(), abs=1e-4)


def test_trailing_space_of_the_context_moves_to_the_continuation(tiny_lm):
    _, tokenizer = load_model(tiny_lm, "float32")
    with_space = encode_pair(tokenizer, "Answer: ", "vibration")
    assert with_space == encode_pair(tokenizer, "Answer:", " vibration")
    assert tokenizer.decode(with_space[1]) == " vibration"


def test_acc_and_acc_norm_as_lm_eval_defines_them():
    # option "a" (1 character) at -2.0 nats, "bbbb" (4 characters) at -4.0: -2.0 vs -1.0 per character
    assert choose(np.array([-2.0, -4.0]), ["a", "bbbb"]) == (0, 1)
    assert choose(np.array([-3.0, -9.0, -2.5]), ["aa", "bbb", "c"]) == (2, 0)


@pytest.mark.parametrize(
    ("answer", "n_options", "expected"),
    [
        ("B", 4, 1),
        (" C\n\nQuestion: Which sensor?\nA. x\nB. y", 4, 2),
        ("A. oil debris", 3, 0),
        ("The correct answer is D.", 4, 3),
        ("(b) vibration", 4, None),  # lower case is not a letter answer
        ("A reliability engineer would not measure it", 4, None),  # the article
        ("B or C", 4, None),
        ("None of the above", 4, None),
        ("Neither option is right: A and B fail", 2, None),
        ("E", 4, None),  # no such option
        ("", 4, None),
    ],
)
def test_undecided_answers(answer, n_options, expected):
    assert read_letter(answer, n_options) == expected


def test_relabelled_options_are_read_by_their_labels():
    assert read_letter("R", ["P", "Q", "R"]) == 2
    assert read_letter("A", ["P", "Q", "R"]) is None  # not one of this question's labels
    assert read_letter("Q. vibration", ["P", "Q"]) == 1


def test_letter_logprobs_of_a_uniform_model(uniform_lm):
    """Every next token has probability 1/V: each label's log-probability is -log V."""
    model, tokenizer = load_model(uniform_lm, "float32")
    labels = [label_token(tokenizer, x, "") for x in "ABCD"]
    assert len(set(labels)) == 4
    out = next_token_logprobs(model, tokenizer, ["Question: x?\nAnswer:", "Q: y?\nA."], [labels, labels[:2]])
    np.testing.assert_allclose(out[0], [-math.log(model.config.vocab_size)] * 4, rtol=1e-5)
    assert out[1].shape == (2,)


def test_letter_logprobs_equal_one_forward_pass_each(tiny_lm):
    """Batched, left-padded, the shared prefix run once: the same as each prompt alone."""
    model, tokenizer = load_model(tiny_lm, "float32")
    prefix = "Answer this question about industrial condition monitoring.\nQuestion: "
    prompts = [
        prefix + "Which sensor detects bearing damage in a pump?\nA. vibration\nB. voltage\nAnswer:",
        prefix + "Which failure mode shows up in current?\nA. x\nB. y\nC. z\nAnswer:",
        prefix + "Short?\nA. a\nB. b\nAnswer:",
    ]
    candidates = [[label_token(tokenizer, x, " ") for x in "ABC"[:n]] for n in (2, 3, 2)]
    batched = next_token_logprobs(model, tokenizer, prompts, candidates, batch_size=2)
    for prompt, ids, got in zip(prompts, candidates, batched, strict=True):
        with torch.no_grad():
            logits = model(torch.tensor([tokenizer(prompt)["input_ids"]])).logits[0, -1]
        np.testing.assert_allclose(got, torch.log_softmax(logits, -1)[ids].numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="tokens for this tokenizer"):
        label_token(tokenizer, "AB12", " ")


def test_a_published_file_and_a_built_set_score_through_one_path(tiny_lm, tables, tmp_path):
    built = stratified_sample(build_questions(tables["fm_sensor_matrix"]), 12, seed=0)
    records = [
        {
            "id": i,
            "question": q.question,
            "options": list(q.options),
            "option_ids": list(q.option_ids),
            "correct": [bool(c) for c in q.correct],
            "asset_name": q.asset_name,
            "relevancy": q.relevancy,
            "question_type": q.question_type,
        }
        for i, q in enumerate(built.itertuples())
    ]
    (tmp_path / "all.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    published = load_question_set(str(tmp_path / "all.jsonl"))
    model, tokenizer = load_model(tiny_lm, "float32")
    style = prompt_style(tokenizer)
    ours = score_questions(model, tokenizer, built, style, ("letter", "generative"), max_new_tokens=2)
    theirs = score_questions(model, tokenizer, published, style, ("letter", "generative"), max_new_tokens=2)
    for column in (
        "letter_pred",
        "letter_acc",
        "letter_acc_perturbed",
        "gen_acc",
        "answer",
        "direction",
        "form",
    ):
        assert ours[column].tolist() == theirs[column].tolist(), column
    np.testing.assert_allclose(
        np.stack(ours["letter_logprobs"].map(np.sum)), np.stack(theirs["letter_logprobs"].map(np.sum))
    )


def test_fewshot_examples_come_from_other_assets():
    questions = pd.DataFrame({"asset_name": ["pump"] * 3 + ["fan"] * 3 + ["motor"] * 4})
    shots = fewshot_indices(questions, 3, seed=0)
    for i, examples in enumerate(shots):
        assert len(examples) == 3 and i not in examples
        assert all(questions["asset_name"][j] != questions["asset_name"][i] for j in examples)
    assert shots == fewshot_indices(questions, 3, seed=0)


def test_kshot_and_chat_prompts(tiny_lm):
    _, tokenizer = load_model(tiny_lm, "float32")
    questions = pd.DataFrame(
        {
            "question": ["Which sensor detects bearing damage?", "Which failure mode shows in current?"],
            "options": [["vibration", "voltage"], ["misalignment", "rotor bar damage", "seal leak"]],
            "answer_index": [0, 1],
            "asset_name": ["pump", "motor"],
        }
    )
    kshot = build_prompts(questions, PromptStyle(chat=False, num_fewshot=1), tokenizer)
    assert kshot["context"][0] == (
        "Question: Which failure mode shows in current?\nAnswer: rotor bar damage\n\n"
        "Question: Which sensor detects bearing damage?\nAnswer:"
    )
    assert kshot["prompt"][0].endswith("A. vibration\nB. voltage\nAnswer:")
    assert "\nC. seal leak\nAnswer: B\n\n" in kshot["prompt"][0]
    chat = build_prompts(questions, PromptStyle(chat=True, num_fewshot=0, delimiter=""), tokenizer)
    assert chat["context"][1].startswith("<|im_start|>") and chat["context"][1].endswith(
        "<|im_start|>assistant\n"
    )
    assert "C. seal leak\nReply with the letter" in chat["prompt"][1]


def _scored(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {
        "id": [f"q{i}" for i in range(n)],
        "asset_name": ["pump", "pump", "fan", "fan"] * (n // 4),
        "failure_mode": ["seal leak", "seal leak", "unbalance", "misalignment"] * (n // 4),
        "direction": ["fm2sensor"] * n,
        "form": ["selection", "elimination"] * (n // 2),
        "relevancy": ["relevant_sensors_for_failure_mode", "irrelevant_sensors_for_failure_mode"] * (n // 2),
        "options": [["a", "b"], ["a", "b", "c"]] * (n // 2),
        "answer_index": [0] * n,
    }
    return pd.DataFrame(base | columns)


def test_summary_metrics_by_hand():
    scored = _scored(
        letter_acc=[1.0, 0.0, 1.0, 1.0],
        letter_acc_perturbed=[1.0, 1.0, 0.0, 1.0],
        gen_acc=[1.0, 0.0, 0.0, 0.0],
        undecided=[False, False, True, True],
    )
    headline, breakdown = summarise(scored, resamples=500)
    letter = headline["letter"]
    assert (letter["acc_all"], letter["acc_sel"], letter["acc_el"]) == (0.75, 1.0, 0.5)
    assert letter["questions_sel"] == letter["questions_el"] == 2
    assert letter["acc_perturb"] == 0.75 and letter["consistency"] == 0.5  # right on both: q0, q3
    assert headline["generative"]["undecided"] == 2 and "acc_perturb" not in headline["generative"]
    low, high = letter["acc_all_ci95"]
    assert 0 <= low < 0.75 < high <= 1
    assert breakdown["letter"]["by_asset"]["fan"]["acc"] == 1.0
    assert breakdown["letter"]["by_options"]["3"] == {"questions": 2, "acc": 0.5, "ci95": [0.0, 1.0]}
    assert bootstrap_ci(np.ones(10)) == [1.0, 1.0]


def test_the_smallest_difference_a_set_can_tell():
    """An untuned model's MDE: 2.8 x sqrt(2) standard errors of its accuracy (independent questions:
    sqrt(p(1-p)/n)); four times the questions halve it."""
    rng = np.random.default_rng(0)
    for n in (400, 1600):
        right = (rng.random(n) < 0.3).astype(float)
        scored = _scored(letter_acc=right).assign(failure_mode="")  # every question its own cluster
        mde = summarise(scored, resamples=2000)[0]["letter"]["mde_all"]
        p = right.mean()
        assert mde == pytest.approx(2.8 * math.sqrt(2 * p * (1 - p) / n), rel=0.1)


def test_cluster_bootstrap_resamples_whole_clusters():
    # cluster 0 always right, cluster 1 always wrong: a resample's mean is 0, 1/2 or 1, never 1/4
    values = np.array([1.0, 1.0, 0.0, 0.0])
    means = bootstrap_means(values, np.array([0, 0, 1, 1]), resamples=400, seed=0)
    assert set(np.round(means, 6)) <= {0.0, 0.5, 1.0} and {0.0, 0.5, 1.0} <= set(np.round(means, 6))
    per_question = bootstrap_means(values, np.arange(4), resamples=400, seed=0)
    assert 0.25 in set(np.round(per_question, 6))
    assert bootstrap_ci(values, ["a", "a", "b", "b"], resamples=400) == [0.0, 1.0]


def test_mcnemar_and_the_paired_difference_by_hand():
    base = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 1], float)
    variant = np.array([1, 0, 1, 1, 1, 1, 1, 1, 0, 1], float)
    # discordant pairs: 6 better, 1 worse; exact two-sided p = 2 * P(X <= 1 | n=7, 1/2) = 2 * 8 / 128
    assert mcnemar_p(base, variant) == pytest.approx(0.125)
    assert mcnemar_p(base, base) == 1.0
    result = paired_difference(variant, base, np.arange(10), resamples=2000, seed=0)
    assert result["delta"] == 0.5 and (result["better"], result["worse"]) == (6, 1)
    low, high = result["ci95"]
    assert -0.05 <= low <= 0.15 and 0.85 <= high <= 1.0  # about 0.5 -+ 1.96 * 0.21
    # 2.8 standard errors of the mean difference: the differences' sd is sqrt(0.7 - 0.5^2) over 10
    assert result["mde"] == pytest.approx(2.8 * math.sqrt(0.45 / 10), rel=0.15)
    constant = paired_difference(np.ones(6), np.zeros(6), np.arange(6))
    assert constant["ci95"] == [1.0, 1.0] and constant["mde"] == 0.0 and constant["p_mcnemar"] == 0.03125


def test_compare_pairs_the_same_questions_by_id():
    base = _scored(letter_acc=[0.0, 0.0, 1.0, 0.0])
    variant = _scored(letter_acc=[1.0, 1.0, 1.0, 0.0]).iloc[::-1].reset_index(drop=True)  # another order
    result = compare(variant, base, resamples=200)
    assert result["letter"]["all"]["delta"] == 0.5
    assert result["letter"]["sel"]["delta"] == 0.5 and result["letter"]["el"]["delta"] == 0.5
    with pytest.raises(ValueError, match="same questions"):
        compare(variant.iloc[:3], base)


def test_compare_skips_a_mode_one_side_was_not_scored_in():
    """A model scored generatively against a base whose predictions of this set hold no generative
    answers (the column is there, from another set, but empty): no comparison, not a NaN one."""
    base = _scored(letter_acc=[0.0, 0.0, 1.0, 0.0], gen_acc=[np.nan] * 4)
    model = _scored(letter_acc=[1.0, 0.0, 1.0, 0.0], gen_acc=[1.0, 1.0, 0.0, 0.0])
    result = compare(model, base, resamples=100)
    assert list(result) == ["letter"] and result["letter"]["all"]["delta"] == 0.25
    assert list(compare(base, model, resamples=100)) == ["letter"]


def test_summary_table_shows_the_paired_comparison_and_labels_the_controls():
    def result(acc, base=None, leak=False, delta=None):
        summary = {
            "of": 2667,
            "questions": 800,
            "letter": {
                "acc_all": acc,
                "acc_all_ci95": [acc - 0.03, acc + 0.03],
                "acc_sel": 0.2,
                "acc_el": 0.3,
                "acc_sel_pooled": 0.25,
                "acc_el_pooled": 0.35,
            },
        }
        out = {"model": "m", "base_model": "m", "prompt_style": "chat", "d_eval": summary}
        if base:
            summary["vs_base"] = {
                "letter": {
                    "all": {
                        "delta": delta,
                        "ci95": [delta - 0.02, delta + 0.02],
                        "p_mcnemar": 0.001,
                        "mde": 0.031,
                    }
                }
            }
            out |= {"base": base, "leak": leak}
        return out

    teacher = result(0.36) | {"model": "smollm2", "endpoint": "local"}
    paired = {"delta": 0.06, "ci95": [0.01, 0.11], "p_mcnemar": 0.02, "mde": 0.05}
    teacher["d_eval"]["vs_students"] = {"kd_qa": {"letter": {"all": paired, "sel": paired}}}
    table = summary_table(
        {
            "student_instruct": result(0.30),
            "kd_qa": result(0.32, "student_instruct", delta=0.02),
            "control_qa": result(0.45, "student_instruct", leak=True, delta=0.15),
            "teacher": teacher,
        }
    )
    assert "## d_eval: 800 of 2667 questions" in table
    untuned = "| student_instruct | letter | 0.300 [0.27, 0.33] | 0.200 | 0.300 | 0.250 | 0.350 |"
    assert untuned + " - | - | - | - | - |" in table
    assert (
        "| kd_qa (from student_instruct) | letter | 0.320 [0.29, 0.35] | 0.200 | 0.300 | 0.250 | 0.350 "
        "| +0.020 [+0.000, +0.040] | 0.001 | 0.031 |" in table
    )
    # the teacher: named by its model and endpoint, and paired with each student
    assert "| teacher (smollm2 at local) | letter | 0.360 [0.33, 0.39] |" in table
    assert "### teacher vs each student: teacher - student on the same questions" in table
    assert "| kd_qa | letter | +0.060 [+0.010, +0.110] | 0.02 | 0.050 | +0.060 [+0.010, +0.110] | - |" in (
        table
    )
    controls = table.index("### Positive controls")
    assert table.index("| control_qa (from student_instruct)") > controls > table.index("| kd_qa")
