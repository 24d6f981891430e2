"""Scoring a model behind an endpoint (the teacher) and FailureSensorIQ's own definitions: the paired
comparison with the students and the cache at the published size (simulated endpoint), Acc_Sel /
Acc_El as run_eval.py computes them, and the leaderboard protocol through an endpoint and a local
model."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SMOLLM2, teacher_config

from alia.llm.client import LLMClient
from alia.student.endpoint import compare_with_students, evaluate_endpoint, label_logprobs, score_endpoint
from alia.student.engine import load_model
from alia.student.formats import PromptStyle
from alia.student.leaderboard import MAX_ASKS, REASK, ask_rounds, leaderboard_prompt, read_choice
from alia.student.questions import build_questions, load_question_set
from alia.student.scoring import score_questions, summarise


def simulated(tmp_path, cache: str = "teacher.sqlite", **overrides) -> LLMClient:
    """The eval_teacher client (greedy, short answers) on the simulated endpoint."""
    settings = {"base_url": "simulated", "temperature": 0.0, "max_tokens": 8, "concurrency": 16}
    config = teacher_config(**settings | overrides)
    return LLMClient(config, tmp_path / cache)


@pytest.fixture(scope="module")
def mcqa() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())["mcqa"]


@pytest.fixture(scope="module")
def d_eval(tables) -> pd.DataFrame:
    return build_questions(tables["fm_sensor_matrix"], seed=0)


# --- the teacher's own score ----------------------------------------------------------------------


def test_the_teacher_at_the_published_size_paired_with_students_and_a_rerun_makes_no_call(
    tmp_path, d_eval, mcqa
):
    """All 2,667 D_eval questions and the 50 expert ones through the simulated endpoint: generative and
    letter from one request each; each student paired on the same questions; a re-run answers from the
    cache (0 calls) with the same figures."""
    expert = load_question_set(str(REPO / "data" / "raw" / "dev" / "expert_mcqa_50.jsonl"))
    sets = {"d_eval": d_eval, "expert": expert}
    mcqa = mcqa | {"sets": {name: {"sample": 0} for name in sets}, "bootstrap_resamples": 200}
    params = {"sets": ["d_eval", "expert"], "modes": ["generative", "letter"], "top_logprobs": 5}
    # two students on the same questions: one always right, one always wrong
    students = {
        name: pd.concat(
            [q.assign(set=s, letter_acc=float(right), gen_acc=float(right)) for s, q in sets.items()],
            ignore_index=True,
        )
        for name, right in (("oracle", True), ("never", False))
    }

    with simulated(tmp_path) as client:
        metrics, breakdown, predictions = evaluate_endpoint(client, sets, params, mcqa)
        metrics = compare_with_students(metrics, predictions, students, mcqa)
        calls = client.run_stats()["calls"]
    assert calls == len(d_eval) + len(expert) == 2717  # one request a question serves both modes
    assert metrics["logprobs_served"] and metrics["d_eval"]["questions"] == 2667
    teacher = predictions[predictions["set"] == "d_eval"]
    # the simulated endpoint ranks its answer's letter first: the two readings agree on every question
    assert (teacher["letter_pred"].map(lambda p: p[0]) == teacher["gen_pred"]).all()
    accuracy = teacher["gen_acc"].mean()
    assert metrics["d_eval"]["generative"]["acc_all"] == round(accuracy, 4)
    assert 0.2 < accuracy < 0.5  # a random letter over 2-5 options
    for student, expected in (("oracle", accuracy - 1), ("never", accuracy)):
        paired = metrics["d_eval"]["vs_students"][student]
        assert paired["generative"]["all"]["delta"] == round(expected, 4)
        assert paired["letter"]["all"]["delta"] == round(expected, 4)
        low, high = paired["generative"]["all"]["ci95"]
        assert low <= paired["generative"]["all"]["delta"] <= high
    assert set(breakdown["d_eval"]["generative"]) == {"by_asset", "by_direction", "by_form", "by_options"}

    with simulated(tmp_path) as client:  # the same cache
        again, _, replayed = evaluate_endpoint(client, sets, params, mcqa)
        assert client.run_stats()["calls"] == 0 and client.run_stats()["cache_hits"] == 2717
    assert again["logprobs_served"]  # the first token's log-probabilities come back from the cache too
    for scorer in ("generative", "letter"):
        assert again["d_eval"][scorer] == metrics["d_eval"][scorer]
    for column in ("gen_pred", "letter_pred", "letter_logprobs"):
        assert replayed[column].tolist() == predictions[column].tolist()


def test_an_endpoint_without_logprobs_scores_no_letter(tmp_path, d_eval, mcqa):
    """Top log-probabilities that name no label leave the question undecided (wrong); a set whose
    answers carry none has no letter scorer at all."""
    sample = d_eval.head(6)
    with simulated(tmp_path) as client:
        rows, served = score_endpoint(client, sample, ("generative",))
    assert not served and "letter_acc" not in rows and len(rows) == 6

    class NoLabel:
        top_logprobs = [("The", -0.1), (" A", -2.0), ("A", -1.5), ("I", -3.0)]

    np.testing.assert_array_equal(label_logprobs(NoLabel(), ["A", "B"]), [-1.5, -np.inf])


def test_a_set_the_students_are_not_scored_on_is_a_clear_error(tmp_path, d_eval, mcqa):
    params = {"sets": ["d_eval_multi"], "modes": ["generative"], "top_logprobs": 5}
    with simulated(tmp_path) as client, pytest.raises(ValueError, match="'d_eval_multi' is not a question"):
        evaluate_endpoint(client, {"d_eval": d_eval}, params, mcqa | {"sets": {"d_eval": {"sample": 0}}})


# --- FailureSensorIQ's own definitions ------------------------------------------------------------


def run_eval_accuracies(scored: pd.DataFrame, column: str) -> dict[str, float]:
    """As FailureSensorIQ's run_eval.py reads them: accuracy per `relevancy` value
    (transition_analysis.get_record_id_for_correct_answer), Acc_Sel and Acc_El its two
    failure mode -> sensor values, Acc_All over every record."""
    per_value = scored.groupby("relevancy")[column].mean()
    return {
        "acc_all": scored[column].mean(),
        "acc_sel": per_value["relevant_sensor_for_failure_mode"],
        "acc_el": per_value["irrelevant_sensor_for_failure_mode"],
    }


def test_acc_sel_and_acc_el_as_run_eval_computes_them():
    """A hand-made set with the published labels (the 50-question sample's singular spelling): our
    acc_sel / acc_el equal run_eval.py's; the sensor -> failure mode questions count in Acc_All only,
    and the pooled figures keep every selection / elimination question."""
    rows = []
    layout = {  # relevancy: (form, direction, right answers out of 4)
        "relevant_sensor_for_failure_mode": ("selection", "fm2sensor", 3),
        "irrelevant_sensor_for_failure_mode": ("elimination", "fm2sensor", 1),
        "relevant_failure_mode_for_sensor": ("selection", "sensor2fm", 0),
        "irrelevant_failure_mode_for_sensor": ("elimination", "sensor2fm", 4),
    }
    for relevancy, (form, direction, right) in layout.items():
        for i in range(4):
            rows.append(
                {
                    "id": f"{relevancy}-{i}",
                    "asset_name": "Pump",
                    "failure_mode": f"fm{i}",
                    "relevancy": relevancy,
                    "form": form,
                    "direction": direction,
                    "options": ["a", "b"],
                    "answer_index": 0,
                    "letter_acc": float(i < right),
                }
            )
    scored = pd.DataFrame(rows)
    ours, _ = summarise(scored, resamples=50)
    expected = run_eval_accuracies(scored, "letter_acc")
    ours_three = (ours["letter"]["acc_all"], ours["letter"]["acc_sel"], ours["letter"]["acc_el"])
    assert ours_three == (expected["acc_all"], expected["acc_sel"], expected["acc_el"]) == (0.5, 0.75, 0.25)
    assert ours["letter"]["questions_sel"] == ours["letter"]["questions_el"] == 4
    # ours, under their own names: both directions
    assert (ours["letter"]["acc_sel_pooled"], ours["letter"]["acc_el_pooled"]) == (0.375, 0.625)
    assert ours["letter"]["questions_sel_pooled"] == 8


def test_d_eval_labels_are_read_in_the_plural_as_published(d_eval):
    """Our D_eval spells the labels as the published file does (plural): Acc_Sel is its 470
    failure mode -> sensor selection questions, Acc_El its 872 elimination ones."""
    scored = d_eval.assign(letter_acc=1.0)
    ours, _ = summarise(scored, resamples=20)
    assert (ours["letter"]["questions_sel"], ours["letter"]["questions_el"]) == (470, 872)
    assert (ours["letter"]["questions_sel_pooled"], ours["letter"]["questions_el_pooled"]) == (923, 1744)


# --- the leaderboard protocol ---------------------------------------------------------------------


def test_the_leaderboard_prompt_is_perteval_s():
    prompt = leaderboard_prompt("Which sensor?", ["vibration", "oil debris"], ["A", "B"])
    assert prompt.startswith(
        "Please select the correct option(s) from the following options given the question. "
        "To solve the problem, follow the Let's think Step by Step reasoning strategy.\n"
        "Question: Which sensor?\nOptions:\nA vibration\nB oil debris\n"
        '{"option_a": "<Reasoning for option a>"'
    )
    assert prompt.endswith('e.g., ["A", "B", "C", "D", "E"]>}\nYour output in a single line:')


@pytest.mark.parametrize(
    "reply, chosen",
    [
        ('{"option_a": "no", "option_b": "yes", "answer": ["B"]}', [False, True, False]),
        ('Sure. {"option_a": "yes", "answer": ["A", "C"]} and more {"answer": ["B"]}', [True, False, True]),
        ('{"reasoning": "x" "answer": ["C"]}', [False, False, True]),  # perteval's repair: a comma
        ('{"reasoning": "x" answer: ["C"]}', [False, False, True]),  # and a bare key
        ('{"answer": "AC"}', [True, False, True]),  # `in` the answer, as perteval reads it
    ],
)
def test_a_reply_is_read_as_perteval_reads_it(reply, chosen):
    assert read_choice(reply, ["A", "B", "C"]) == chosen


@pytest.mark.parametrize(
    "reply",
    [
        "The answer is B.",
        '{"option_a": "yes"}',
        '{"answer": ["B"',
        '{"reasoning": "x", answer: ["C"]}',  # perteval's repair doubles the comma: unusable there too
    ],
)
def test_an_unusable_reply_is_an_error(reply):
    with pytest.raises(ValueError):
        read_choice(reply, ["A", "B", "C"])


def test_three_asks_an_exact_set_and_an_invalid_answer_counted_wrong():
    questions = pd.DataFrame(
        {
            "question": ["q1", "q2", "q3", "q4"],
            "options": [["x", "y"], ["x", "y"], ["x", "y", "z"], ["x", "y", "z"]],
            "option_ids": [["A", "B"], ["A", "B"], ["A", "B", "C"], ["A", "B", "C"]],
            "correct": [[False, True], [True, False], [True, False, True], [True, False, True]],
        }
    )
    script = {  # question -> its replies, ask by ask
        "q1": ['{"answer": ["B"]}'],
        "q2": ["I think A.", '{"answer": ["A"]}'],  # parsed on the second ask
        "q3": ["?", "?", "?"],  # never parses: invalid, wrong, kept
        "q4": ['{"answer": ["A"]}'],  # one of two correct options: not the exact set
    }
    seen = []

    def answer(conversations, desc):
        seen.append(conversations)
        out = []
        for c in conversations:
            question = c[1]["content"].split("Question: ")[1].split("\n")[0]
            out.append(script[question][sum(m["role"] == "assistant" for m in c)])
        return out

    result = ask_rounds(questions, answer)
    assert result["leaderboard_acc"] == [1.0, 1.0, 0.0, 0.0]
    assert result["leaderboard_asks"] == [1, 2, MAX_ASKS, 1]
    assert result["leaderboard_invalid"] == [False, False, True, False]
    assert result["leaderboard_pred"] == [[1], [0], [], [0]]
    assert [len(batch) for batch in seen] == [4, 2, 1]  # each round re-asks only the unparsed
    assert seen[1][0][-1] == {"role": "user", "content": REASK} and seen[1][0][-2]["content"] == "I think A."


def test_the_leaderboard_protocol_through_the_simulated_endpoint(tmp_path, d_eval):
    """Single- and multi-correct questions; malformed answers are re-asked in the same conversation,
    counted, and what never parses is wrong."""
    sample = d_eval.groupby("form").head(10)
    first = sample.head(4)
    multi = first.assign(
        id=lambda q: q["id"] + "-multi",
        question=lambda q: q["question"] + " Choose two.",  # other words: not the cached answer
        correct=lambda q: q["correct"].map(lambda c: [True] * 2 + list(c[2:])),
    )
    questions = pd.concat([sample, multi], ignore_index=True)
    with simulated(tmp_path, max_tokens=512, simulated={"rate_malformed": 0.4, "seed": 1}) as client:
        rows, _ = score_endpoint(client, questions, ("leaderboard",))
        calls = client.run_stats()["calls"]
    assert calls == sum(rows["leaderboard_asks"]) > len(rows)  # re-asks happened, each a call
    assert rows["leaderboard_asks"].max() <= MAX_ASKS
    for r in rows.itertuples():
        chosen = [i for i, c in enumerate(r.correct) if c]
        assert r.leaderboard_acc == float(not r.leaderboard_invalid and r.leaderboard_pred == chosen)
        if r.leaderboard_invalid:
            assert r.leaderboard_asks == MAX_ASKS and r.leaderboard_acc == 0.0
    assert json.loads(rows["leaderboard_answer"][~rows["leaderboard_invalid"]].iloc[0])["answer"]


def test_the_leaderboard_protocol_on_a_local_model(tiny_lm, d_eval):
    """The same protocol over a local model's chat template: a random 2-layer model never writes the
    JSON, so every question is asked 3 times and scored wrong, none dropped."""
    model, tokenizer = load_model(tiny_lm, "float32")
    rows = score_questions(
        model,
        tokenizer,
        d_eval.head(3),
        PromptStyle(chat=True, num_fewshot=0),
        modes=("leaderboard",),
        batch_size=3,
        leaderboard_max_new_tokens=6,
    )
    assert rows["leaderboard_asks"].tolist() == [MAX_ASKS] * 3
    assert rows["leaderboard_acc"].tolist() == [0.0] * 3 and rows["leaderboard_invalid"].all()
    headline, _ = summarise(rows.assign(failure_mode=d_eval.head(3)["failure_mode"].values), resamples=20)
    assert headline["leaderboard"]["acc_all"] == 0.0 and headline["leaderboard"]["questions_all"] == 3


# --- the default teacher is the instruct student ------------------------------------------------


@pytest.mark.slow
def test_the_default_teacher_answers_as_the_instruct_student_does(tmp_path, d_eval):
    """The local teacher (llama.cpp over SmolLM2's GGUF) and the instruct student (the same weights
    dequantised, in transformers) read the same words: on 50 D_eval questions their picks agree (here
    90% generative, 96% letter; not all, since llama.cpp's Q4 kernels round activations that the student
    computes in float32). A teacher sent other words, or read at other tokens, falls far below."""
    from alia.core.models import prepare_causal_lm
    from alia.core.precision import resolve_dtype
    from alia.student.formats import prompt_style
    from alia.student.questions import stratified_sample

    questions = stratified_sample(d_eval, 50, seed=0)
    prepare_causal_lm(SMOLLM2, tmp_path / "student", dtype="bfloat16")  # as prepare_models stores it
    model, tokenizer = load_model(tmp_path / "student", resolve_dtype("auto"))
    student = score_questions(
        model, tokenizer, questions, prompt_style(tokenizer), ("letter", "generative"), perturbation=False
    )
    config = teacher_config(temperature=0.0, max_tokens=8)  # params.yaml teacher: with eval_teacher's
    with LLMClient(config, tmp_path / "teacher.sqlite") as client:
        teacher, served = score_endpoint(client, questions, ("letter", "generative"))
    assert served
    agree_generative = (student["gen_pred"].to_numpy() == teacher["gen_pred"].to_numpy()).mean()
    picks = zip(student["letter_pred"], teacher["letter_pred"], strict=True)
    agree_letter = np.mean([s[0] == t[0] for s, t in picks])
    assert agree_generative >= 0.75 and agree_letter >= 0.8, (agree_generative, agree_letter)
