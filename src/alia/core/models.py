"""Pretrained models: turn a model source named in params.yaml into an ordinary checkpoint under
models/pretrained/.

A source is one of
  - `package:<module>/<file or folder>`: weights shipped inside an installed pip package
    (the offline defaults, see ../shared/MODELS.md);
  - `package:<module>`: a package that assembles its GGUF from chunk packages with an
    `assemble(path)` function that verifies the file's sha256;
  - a local path (a checkpoint folder or a .gguf file);
  - anything else: a Hugging Face hub model id, loaded with `from_pretrained` where the hub is reachable.
GGUF weights are de-quantised to dense tensors, so every later stage (TRL, PEFT, vLLM) loads the
checkpoint with plain `from_pretrained`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

PACKAGE_PREFIX = "package:"
SOURCE_FILE = "alia_source.json"  # provenance written beside each prepared checkpoint
# What a saved transformers, PEFT or sentence-transformers model folder holds
MODEL_FILES = ("config.json", "adapter_config.json", "modules.json")


def require_model(path: str | Path) -> Path:
    """A model folder a stage was given. A missing one is reported as such: transformers would take
    the path for a hub model id and fail on that instead."""
    path = Path(path)
    if not any((path / name).exists() for name in MODEL_FILES):
        raise FileNotFoundError(
            f"{path}: no model there (expected one of {', '.join(MODEL_FILES)}); "
            "`dvc repro` (or `dvc pull`) makes it"
        )
    return path


@dataclass
class ModelSource:
    spec: str  # as written in params.yaml
    location: str  # a local file, a local folder, or a hub model id
    is_local: bool

    @property
    def is_gguf(self) -> bool:
        return self.is_local and self.location.endswith(".gguf")


def package_dir(module: str) -> Path:
    """An installed package's folder, found without importing it (some import optional CLIs)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model package {module!r} is not installed: run `make install` (see requirements/models.txt)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def package_spec(spec: str) -> tuple[str, str] | None:
    """`package:<module>/<file>` as (module, file), file "" for a package of chunks; None for any
    other source (a local path or a hub model id)."""
    if not spec.startswith(PACKAGE_PREFIX):
        return None
    module, _, file = spec.removeprefix(PACKAGE_PREFIX).partition("/")
    return module, file


def resolve_source(spec: str, workdir: str | Path) -> ModelSource:
    """Where the weights of `spec` are; a chunked GGUF package is assembled into `workdir`."""
    if package := package_spec(spec):
        module, relative = package
        if relative:
            path = package_dir(module) / relative
            if not path.exists():
                raise FileNotFoundError(f"{spec}: {path} does not exist in the installed package")
            return ModelSource(spec, str(path), True)
        package = importlib.import_module(module)
        if not hasattr(package, "assemble"):
            raise ValueError(f"{spec}: name a file inside the package, e.g. {PACKAGE_PREFIX}{module}/<file>")
        # assemble() concatenates the chunk packages and raises unless the sha256 matches.
        path = package.assemble(Path(workdir) / package.MODEL_NAME, overwrite=True)
        return ModelSource(spec, str(path), True)
    if Path(spec).exists():
        return ModelSource(spec, str(Path(spec).resolve()), True)
    return ModelSource(spec, spec, False)


def require_hub(spec: str) -> None:
    """A hub model id needs the hub: where its host does not even resolve (an offline machine), say so
    now, naming the source, instead of after the hub client's minute of retries. HF_HUB_OFFLINE=1
    loads from the local hub cache, which needs no network."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or ""
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        raise OSError(
            f"model source {spec!r}: not an installed package ({PACKAGE_PREFIX}<module>/<file>), not a "
            f"local path, and the hub ({host}) cannot be reached from here to load it as a model id"
        ) from None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def prepare_causal_lm(
    spec: str, out_dir: str | Path, dtype: str = "bfloat16", hub_id: str | None = None
) -> dict[str, Any]:
    """Save the causal LM named by `spec` as a transformers checkpoint (model + tokenizer) in `out_dir`;
    `hub_id`: the hub model a packaged or local `spec` was made from (a hub `spec` is its own), for the
    cards."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as workdir:
        source = resolve_source(spec, workdir)
        if not source.is_local:
            require_hub(spec)
        kwargs: dict[str, Any] = {}
        location = source.location
        if source.is_gguf:
            location, kwargs["gguf_file"] = str(Path(location).parent), Path(location).name
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=getattr(torch, dtype), **kwargs)
        if getattr(model, "hf_quantizer", None) is not None:
            # GGUF weights were de-quantised on load; drop the GGUF config so the checkpoint is a plain one.
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        info = {
            "spec": spec,
            "hub_id": hub_id if source.is_local else spec,
            "location": location if not source.is_local else Path(source.location).name,
            "sha256": sha256_file(source.location) if source.is_gguf else "",
            "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": dtype,
            "chat_template": tokenizer.chat_template is not None,
        }
    (out_dir / SOURCE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def prepare_embedder(spec: str, out_dir: str | Path, hub_id: str | None = None) -> dict[str, Any]:
    """Save the sentence-transformers model named by `spec` in sentence-transformers format in `out_dir`
    (`hub_id` as for prepare_causal_lm)."""
    from sentence_transformers import SentenceTransformer

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as workdir:
        source = resolve_source(spec, workdir)
        if not source.is_local:
            require_hub(spec)
        model = SentenceTransformer(source.location, device="cpu")
        model.save(str(out_dir))
    info = {
        "spec": spec,
        "hub_id": hub_id if source.is_local else spec,
        "location": source.location if not source.is_local else Path(source.location).name,
        "dimensions": model.get_embedding_dimension(),
        "max_seq_length": model.max_seq_length,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (out_dir / SOURCE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info
