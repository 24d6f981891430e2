"""The embedder's retrieval tasks as tools: plain Python functions that the agent also calls, over
the fine-tuned (or any sentence-transformers) embedder, or over BM25 for comparison.

    tools = EmbedderTools("models/embedder", "data/embed/tasks.parquet", "data/embed/descriptions.parquet")
    tools.sensors_for_failure_mode("Compressor", "overheating")
    # [{'item': 'temperature', 'score': 0.71}, ...]

Each function builds its task's query exactly as the embedder was trained on it (the task's first
instruction, the entities, and, with `augment`, their one-sentence descriptions from embed_tasks'
teacher-backed table), ranks the task's items by cosine similarity and returns the top k with
their scores. `candidates` restricts the ranking to the given items (any strings); `min_score`
drops items scored below it, so a tool may return fewer than k, or nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from alia.core.io import read_parquet
from alia.core.models import require_model
from alia.embedder.tasks import INSTRUCTIONS, build_query, description_lookup

# The tasks with an agent use, by the name of the function that serves them.
TOOL_TASKS = {
    "sensors_for_asset": "A2S",
    "sensors_for_failure_mode": "FM2S",
    "failure_modes_for_sensor": "S2FM",
    "components_for_failure_mode": "FM2CMP",
    "failure_modes_for_component": "C2FM",
    "failure_mode_class": "FM2CLS",
}


class RetrievalTools:
    """The tools over the items of the embedder's tasks (see the module docstring); how items are
    scored for a query is the subclass's (`_scores`)."""

    def __init__(
        self,
        tasks_file: str | Path,
        descriptions_file: str | Path | None = None,
        k: int = 5,
        min_score: float | None = None,
        augment: bool = False,
    ) -> None:
        if k < 1:
            raise ValueError(f"k {k}: expected at least 1")
        tasks = read_parquet(tasks_file, columns=["task", "candidates"])
        self.items = {
            task: sorted({c for cs in group["candidates"] for c in cs})
            for task, group in tasks.groupby("task")
        }
        missing = sorted(set(TOOL_TASKS.values()) - set(self.items))
        if missing:
            raise ValueError(f"{tasks_file}: no queries of the tasks {missing}; is it embed_tasks' output?")
        self.descriptions: dict[str, str] = {}
        if augment:
            if descriptions_file is None:
                raise ValueError("augment needs descriptions_file (embed_tasks' descriptions.parquet)")
            self.descriptions = description_lookup(
                read_parquet(descriptions_file, columns=["entity", "description"])
            )
        self.k, self.min_score = k, min_score

    def _scores(self, task: str, query: str, items: list[str]) -> list[float]:
        raise NotImplementedError

    # --- the tools ---------------------------------------------------------------------------

    def sensors_for_asset(self, asset: str, candidates: list[str] | None = None) -> list[dict]:
        """Sensors that monitor the condition of an asset, best first, with similarity scores.

        Args:
            asset: The asset, e.g. "Electric motor".
            candidates: Only rank these sensors (optional).
        """
        return self.search("A2S", [asset], candidates)

    def sensors_for_failure_mode(
        self, asset: str, failure_mode: str, candidates: list[str] | None = None
    ) -> list[dict]:
        """Sensors that detect a failure mode of an asset, best first, with similarity scores.

        Args:
            asset: The asset, e.g. "Compressor".
            failure_mode: The failure mode, e.g. "bearing damage".
            candidates: Only rank these sensors (optional).
        """
        return self.search("FM2S", [asset, failure_mode], candidates)

    def failure_modes_for_sensor(
        self, asset: str, sensor: str, candidates: list[str] | None = None
    ) -> list[dict]:
        """Failure modes of an asset that a sensor reveals, best first, with similarity scores.

        Args:
            asset: The asset, e.g. "Compressor".
            sensor: The sensor or measurement, e.g. "temperature".
            candidates: Only rank these failure modes (optional).
        """
        return self.search("S2FM", [asset, sensor], candidates)

    def components_for_failure_mode(
        self, asset: str, failure_mode: str, candidates: list[str] | None = None
    ) -> list[dict]:
        """Components of an asset where a failure mode occurs, best first, with similarity scores.

        Args:
            asset: The asset, e.g. "Pump".
            failure_mode: The failure mode, e.g. "bearing damage".
            candidates: Only rank these components (optional).
        """
        return self.search("FM2CMP", [asset, failure_mode], candidates)

    def failure_modes_for_component(self, component: str, candidates: list[str] | None = None) -> list[dict]:
        """Failure modes that occur in a component, best first, with similarity scores.

        Args:
            component: The component (maintainable item), e.g. "bearing".
            candidates: Only rank these failure modes (optional).
        """
        return self.search("C2FM", [component], candidates)

    def failure_mode_class(self, failure_mode: str, candidates: list[str] | None = None) -> list[dict]:
        """The failure-mechanism class of a failure mode, best first, with similarity scores.

        Args:
            failure_mode: The failure mode, e.g. "fatigue".
            candidates: Only rank these classes (optional).
        """
        return self.search("FM2CLS", [failure_mode], candidates)

    def functions(self) -> list[Callable[..., list[dict]]]:
        """The tools, as bound methods (smolagents' `tool` turns each into an agent tool)."""
        return [getattr(self, name) for name in TOOL_TASKS]

    # --- the retrieval behind them ----------------------------------------------------------

    def query(self, task: str, entities: Sequence[str], instruction: str | None = None) -> str:
        """The task's query by embed_tasks' own builder: the instruction (the task's first paraphrase
        unless given), the entities and, with `augment`, their descriptions."""
        return build_query(instruction or INSTRUCTIONS[task][0], entities, self.descriptions)

    def search(
        self,
        task: str,
        entities: Sequence[str],
        candidates: Sequence[str] | None = None,
        k: int | None = None,
    ) -> list[dict]:
        """The top k items of `task` (or of `candidates`) for the query of `entities`, as
        [{"item", "score"}] by decreasing score, those below min_score left out."""
        if task not in self.items:
            raise ValueError(f"task {task!r}: expected one of {sorted(self.items)}")
        entities = [str(e).strip() for e in entities]
        if not all(entities):
            raise ValueError(f"{task}: every query entity must be a non-empty name, got {entities}")
        items = list(dict.fromkeys(str(c) for c in candidates)) if candidates else self.items[task]
        scores = self._scores(task, self.query(task, entities), items)
        # Ties broken by item name, as the evaluation does, so a ranking never depends on input order
        ranked = sorted(zip(items, scores, strict=True), key=lambda pair: (-pair[1], pair[0]))
        top = ranked[: k or self.k]
        if self.min_score is not None:
            top = [(item, score) for item, score in top if score >= self.min_score]
        return [{"item": item, "score": round(score, 4)} for item, score in top]


class EmbedderTools(RetrievalTools):
    """The tools over a sentence-transformers model: items ranked by cosine similarity to the query."""

    def __init__(self, model_dir: str | Path, tasks_file: str | Path, *args: Any, **kwargs: Any) -> None:
        from sentence_transformers import SentenceTransformer

        super().__init__(tasks_file, *args, **kwargs)
        self.model = SentenceTransformer(
            str(require_model(model_dir)), device="cuda" if torch.cuda.is_available() else "cpu"
        )
        self._embeddings: dict[str, torch.Tensor] = {}  # item text -> embedding, computed once

    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self._embeddings]
        if new:
            vectors = self.model.encode(new, convert_to_tensor=True, show_progress_bar=False)
            self._embeddings.update(zip(new, vectors, strict=True))
        return torch.stack([self._embeddings[t] for t in texts])

    def _scores(self, task: str, query: str, items: list[str]) -> list[float]:
        vector = self.model.encode(query, convert_to_tensor=True, show_progress_bar=False)
        return self.model.similarity(vector, self._embed(items))[0].tolist()


class BM25Tools(RetrievalTools):
    """The same tools over BM25 (bm25s, Lucene scoring, as eval_embedder's baseline): items ranked by
    their words' overlap with the query. `min_score` is cosine's scale, so it is not used here."""

    def __init__(self, tasks_file: str | Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(tasks_file, *args, **kwargs)
        self.min_score = None
        self._indexes: dict[tuple[str, ...], Any] = {}  # one index per item list, built once

    def _scores(self, task: str, query: str, items: list[str]) -> list[float]:
        import bm25s

        key = tuple(items)
        if key not in self._indexes:
            self._indexes[key] = bm25s.BM25()
            self._indexes[key].index(bm25s.tokenize(items, show_progress=False), show_progress=False)
        words = bm25s.tokenize(query, show_progress=False, return_ids=False)[0]
        return [float(s) for s in self._indexes[key].get_scores(words)]
