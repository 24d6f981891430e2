"""The MCQA scorer: known log-likelihoods, lm-eval's acc/acc_norm, undecided answers, summaries."""

import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from alia.scoring import (
    PromptStyle,
    bootstrap_ci,
    build_prompts,
    choose,
    encode_pair,
    fewshot_indices,
    load_model,
    loglikelihoods,
    read_letter,
    summarise,
    summary_table,
)

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


def test_batched_left_padded_scores_equal_one_sequence_at_a_time(tiny_lm):
    model, tokenizer = load_model(tiny_lm, "float32")
    batched = loglikelihoods(model, tokenizer, PAIRS, batch_size=4)
    for (context, continuation), score in zip(PAIRS, batched, strict=True):
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


def test_summary_metrics_by_hand():
    scored = pd.DataFrame(
        {
            "asset_name": ["pump", "pump", "fan", "fan"],
            "direction": ["fm2sensor"] * 4,
            "form": ["selection", "elimination", "selection", "elimination"],
            "acc": [1.0, 0.0, 1.0, 1.0],
            "acc_norm": [0.0, 0.0, 1.0, 0.0],
            "exact_match": [1.0, 0.0, 0.0, 0.0],
            "undecided": [False, False, True, True],
        }
    )
    summary = summarise(scored, resamples=500)
    assert summary["acc"] == 0.75 and summary["acc_norm"] == 0.25 and summary["exact_match"] == 0.25
    assert summary["undecided"] == 2 and summary["accuracy_decided"] == 0.5
    low, high = summary["acc_ci95"]
    assert 0 <= low < 0.75 < high <= 1
    assert summary["by_asset"]["fan"] == {
        "questions": 2,
        "acc": 1.0,
        "acc_norm": 0.5,
        "exact_match": 0.0,
        "undecided": 2,
        "accuracy_decided": None,
    }
    assert summary["by_form"]["elimination"]["acc"] == 0.5
    assert bootstrap_ci(np.ones(10)) == [1.0, 1.0]


def test_summary_table_compares_with_the_untuned_model():
    untuned = {
        "model": "models/pretrained/s",
        "base_model": "models/pretrained/s",
        "prompt_style": "chat",
        "d_eval": {"questions": 40, "acc": 0.25, "acc_ci95": [0.1, 0.4], "exact_match": 0.2},
    }
    trained = {
        "model": "models/student/qa",
        "base_model": "models/pretrained/s",
        "prompt_style": "chat",
        "d_eval": {"questions": 40, "acc": 0.35, "acc_ci95": [0.2, 0.5], "exact_match": 0.1},
    }
    table = summary_table({"untuned": untuned, "qa": trained})
    assert "## d_eval (40 questions)" in table
    assert "| untuned | - | chat | 0.250 [0.10, 0.40] | 0.200 |" in table
    assert "| qa | untuned | chat | 0.350 [0.20, 0.50] (+0.100) | 0.100 (-0.100) |" in table
