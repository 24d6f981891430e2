"""Student training: examples and replay, the adapter round-trip, resuming after a crash."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import TrainerCallback

from alia.kd.corpora import read_corpus
from alia.student.engine import load_model
from alia.student.training import play_passages, train_adapter, training_examples

LORA = {"r": 4, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
TRAINING = {  # SFTConfig fields, as params.yaml train_student.sft holds them
    "num_train_epochs": 1,
    "max_steps": 4,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "learning_rate": 5e-2,
    "lr_scheduler_type": "constant",
    "warmup_steps": 0.0,
    "weight_decay": 0.0,
    "optim": "adamw_torch",
    "bf16": False,
    "activation_checkpointing": False,
    "max_length": 64,
    "packing_strategy": "wrapped",
    "save_steps": 2,
    "save_total_limit": 2,
    "seed": 0,
    "data_seed": 0,
}
DOCUMENTS = pd.DataFrame(
    {"text": [f"Document {i}: vibration monitoring reveals bearing wear in pump {i}." * 3 for i in range(9)]}
)
QA = pd.DataFrame(
    {
        "question": ["Which sensor detects bearing wear?", "What does oil debris reveal?"],
        "answer": ["Vibration.", "Gear and bearing wear."],
        "context": ["", "Oil debris analysis counts wear particles."],
    }
)


def test_replay_passages_are_plain_text_from_the_plays():
    passages = play_passages()
    assert len(passages) > 20_000 and len({title for title, _ in passages}) == 38  # 38 plays
    assert not any(speech.startswith(("#", "**", "_")) or "**" in speech for _, speech in passages[:2000])


def test_text_examples_with_a_tenth_of_replay():
    examples, counts = training_examples(DOCUMENTS, "text", replay_fraction=0.1, seed=0)
    assert counts == {"corpus_examples": 9, "replay_examples": 1}  # 1 of 10
    replay = [e["text"] for e in examples if not e["text"].startswith("Document")]
    assert len(replay) == 1 and len(replay[0]) > 100
    assert training_examples(DOCUMENTS, "text", 0.1, seed=0) == (examples, counts)  # seeded
    assert training_examples(DOCUMENTS, "text", 0.5, documents=3, seed=0)[1] == {
        "corpus_examples": 3,
        "replay_examples": 3,
    }
    assert training_examples(DOCUMENTS, "text", 0.0)[1]["replay_examples"] == 0
    with pytest.raises(ValueError, match="replay fraction"):
        training_examples(DOCUMENTS, "text", 1.0)


def test_chat_examples_put_a_raft_context_in_the_user_turn():
    examples, counts = training_examples(QA, "chat", replay_fraction=0.0)
    assert counts["corpus_examples"] == 2
    by_answer = {e["completion"][0]["content"]: e["prompt"][0]["content"] for e in examples}
    assert by_answer["Vibration."] == "Which sensor detects bearing wear?"
    assert by_answer["Gear and bearing wear."] == (
        "Oil debris analysis counts wear particles.\n\nWhat does oil debris reveal?"
    )
    with pytest.raises(ValueError, match="QA records"):
        training_examples(DOCUMENTS, "chat")
    as_text, _ = training_examples(QA.drop(columns="context"), "text", replay_fraction=0.0)
    assert sorted(e["text"] for e in as_text) == [
        "What does oil debris reveal?\nGear and bearing wear.",
        "Which sensor detects bearing wear?\nVibration.",
    ]


def test_a_corpus_folder_is_every_parquet_file_in_it(tmp_path):
    DOCUMENTS.head(2).to_parquet(tmp_path / "a.parquet")
    DOCUMENTS.tail(3).to_parquet(tmp_path / "b.parquet")
    assert len(read_corpus(tmp_path)) == 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no Parquet corpus files"):
        read_corpus(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing.parquet: no such corpus"):
        read_corpus(tmp_path / "missing.parquet")


def test_adapter_round_trip(tiny_lm, tmp_path):
    """The saved adapter is all PeftModel needs, and it changes the model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    examples, _ = training_examples(DOCUMENTS, "text", 0.0)
    result = train_adapter(
        tiny_lm, examples, "text", tmp_path / "adapter", tmp_path / "ckpt", LORA, TRAINING, dtype="float32"
    )
    assert result["steps"] == 4 and len(result["losses"]) == 4 and result["resumed_from_step"] == 0
    assert result["last_loss"] < result["first_loss"]  # a high rate on one repeated sentence: it learns
    assert not (tmp_path / "ckpt").exists()  # finished: no checkpoint left to resume
    adapter = tmp_path / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_lm)
    assert config["target_modules"] == ["q_proj", "v_proj"]  # sorted: the same training, the same bytes
    assert (adapter / "adapter_model.safetensors").stat().st_size < 200_000  # the adapter, not the model

    ids = torch.tensor([[1, 2, 3, 4, 5]])
    base = AutoModelForCausalLM.from_pretrained(tiny_lm)
    with torch.no_grad():
        base_logits = base(ids).logits
        peft_logits = PeftModel.from_pretrained(base, adapter)(ids).logits
        merged_logits = load_model(adapter, "float32")[0](ids).logits
    torch.testing.assert_close(merged_logits, peft_logits, rtol=1e-4, atol=1e-4)
    assert (peft_logits - base_logits).abs().max() > 1e-2


class CrashAfter(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"simulated crash after step {self.step}")


@pytest.fixture
def crashed_run(tiny_lm, tmp_path) -> dict:
    """A training run that crashed after step 3, with a checkpoint at step 2; its arguments."""
    examples, _ = training_examples(DOCUMENTS, "text", 0.0)
    run = dict(
        base_model=tiny_lm,
        examples=examples,
        fmt="text",
        out_dir=tmp_path / "adapter",
        checkpoint_dir=tmp_path / "ckpt",
        lora=LORA,
    )
    with pytest.raises(KeyboardInterrupt):
        train_adapter(**run, sft=TRAINING, callbacks=[CrashAfter(3)])
    return run


def test_resume_after_interruption(crashed_run, tmp_path):
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (tmp_path / "adapter").exists()

    resumed = train_adapter(**crashed_run, sft=TRAINING)
    assert resumed["resumed_from_step"] == 2 and resumed["steps"] == 4
    uninterrupted = train_adapter(**crashed_run | {"out_dir": tmp_path / "again"}, sft=TRAINING)
    assert uninterrupted["resumed_from_step"] == 0
    # the resumed run continued the same optimisation: same last loss as a run never interrupted
    assert resumed["last_loss"] == pytest.approx(uninterrupted["last_loss"], rel=1e-4)
    # and reports the whole run, not the steps since the resume: the loss over all 4 steps, the tokens
    # of all 4 (the trainer's own training_loss and TRL's num_tokens restart at the resume)
    assert len(resumed["losses"]) == 4 and resumed["num_tokens"] > 0
    for figure in ("steps", "train_loss", "first_loss", "num_tokens", "trainable_params"):
        assert resumed[figure] == pytest.approx(uninterrupted[figure], rel=1e-4), figure
    # and its adapter loads, with the weights of the run never interrupted
    resumed_model, again = (
        load_model(tmp_path / "adapter", "float32")[0],
        load_model(tmp_path / "again", "float32")[0],
    )
    for (name, a), (_, b) in zip(resumed_model.state_dict().items(), again.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_checkpoints_of_another_training_are_not_resumed(crashed_run, tmp_path):
    changed = train_adapter(**crashed_run, sft=TRAINING | {"learning_rate": 1e-2})
    assert changed["resumed_from_step"] == 0 and changed["steps"] == 4
    assert Path(tmp_path / "adapter" / "adapter_config.json").exists()


def _cut_short(checkpoint: Path, how: str) -> None:
    """`checkpoint` as a kill while saving leaves it: its trainer_state.json missing or half-written."""
    state = checkpoint / "trainer_state.json"
    if how == "missing":
        state.unlink()
    else:
        state.write_text(state.read_text()[:40])


@pytest.mark.parametrize("how", ["missing", "truncated"])
def test_an_incomplete_checkpoint_is_skipped(crashed_run, tmp_path, capsys, how):
    """A checkpoint cut short while saving is removed (one line says so) and the one before it resumes."""
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(ckpt / "checkpoint-2", ckpt / "checkpoint-3")  # as if step 3's save had begun
    state = json.loads((ckpt / "checkpoint-3" / "trainer_state.json").read_text())
    (ckpt / "checkpoint-3" / "trainer_state.json").write_text(json.dumps(state | {"global_step": 3}))
    _cut_short(ckpt / "checkpoint-3", how)
    resumed = train_adapter(**crashed_run, sft=TRAINING)
    assert resumed["resumed_from_step"] == 2 and resumed["steps"] == 4
    assert "checkpoint-3: incomplete" in capsys.readouterr().out


def test_no_complete_checkpoint_starts_over(crashed_run, tmp_path, capsys):
    _cut_short(tmp_path / "ckpt" / "checkpoint-2", "missing")
    fresh = train_adapter(**crashed_run, sft=TRAINING)
    assert fresh["resumed_from_step"] == 0 and fresh["steps"] == 4 and len(fresh["losses"]) == 4
    assert "checkpoint-2: incomplete" in capsys.readouterr().out
