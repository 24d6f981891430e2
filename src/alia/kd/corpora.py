"""Knowledge corpora (KD_*): building the items a teacher writes about, and cleaning what it wrote.

Every corpus goes through the same filters, in order, and reports how many passages each removed:
failed answers, empty answers, truncated answers (the teacher hit max_tokens), exact duplicates
(after case and whitespace normalisation) and near duplicates (MinHash LSH over word shingles).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import combinations, count
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from datasketch import MinHash, MinHashLSH

from alia.core.io import ChunkWriter, parquet_errors, read_parquet
from alia.data.vocabulary import LABEL_SEPARATOR, Canonicaliser, normalise_text

RELATIONS = ("asset_sensor", "asset_failure_mode", "asset_sensor_failure_mode")


def doc_id(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16]


def _chunks(values: list, size: int) -> list[list]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def knowledge_requests(
    classes: list[str],
    class_failure_modes: pd.DataFrame,
    sensors: pd.DataFrame,
    relevance: pd.DataFrame,
    failure_modes_per_class: int,
    sensors_per_class: int,
    facts_per_document: int,
) -> pd.DataFrame:
    """One row per document to write: (doc_id, equipment_class, relation, facts, fact_entities),
    `facts_per_document` facts each: as the prompt says them, and as lists of the labels they name.

    asset_sensor: the class's top sensors; asset_failure_mode: its first failure modes;
    asset_sensor_failure_mode: the (sensor, failure mode) pairs the relevance check said yes to.
    """
    rows = []
    for cls in classes:
        fms = class_failure_modes.loc[class_failure_modes["equipment_class"] == cls, "failure_mode"]
        top = sensors[(sensors["equipment_class"] == cls) & (sensors["rank"] <= sensors_per_class)]
        yes = relevance[(relevance["equipment_class"] == cls) & relevance["relevant"].fillna(False)]
        # each fact as the prompt says it, and as the entity labels it names (alia.kd.faithfulness)
        facts = {
            "asset_sensor": [(s, [s]) for s in top["sensor"]],
            "asset_failure_mode": [
                (fm.replace(LABEL_SEPARATOR, " or "), [fm]) for fm in fms.head(failure_modes_per_class)
            ],
            "asset_sensor_failure_mode": [
                (f"{r.sensor} helps detect {r.failure_mode}", [r.sensor, r.failure_mode])
                for r in yes.itertuples()
            ],
        }
        for relation in RELATIONS:
            for chunk in _chunks(facts[relation], facts_per_document):
                said, named = [text for text, _ in chunk], [labels for _, labels in chunk]
                rows.append([doc_id("kd_base", cls, relation, *said), cls, relation, said, named])
    return pd.DataFrame(rows, columns=["doc_id", "equipment_class", "relation", "facts", "fact_entities"])


def _normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def _shingles(text: str, size: int) -> set[str]:
    words = re.findall(r"\w+", text.casefold())
    return {" ".join(words[i : i + size]) for i in range(max(1, len(words) - size + 1))}


class PassageFilter:
    """The corpus filters over a stream of passage chunks: call it on each chunk in order; it returns
    the chunk's survivors (first occurrence kept, also across chunks) and adds to `counts`.

    What it remembers is bounded by the corpus's distinct passages: a 16-byte digest each for exact
    duplicates and a MinHash LSH entry for near duplicates, never the texts.
    """

    def __init__(self, near_duplicate_threshold: float = 0.85, shingle_size: int = 5, num_perm: int = 128):
        self.shingle_size, self.num_perm = shingle_size, num_perm
        self.lsh = MinHashLSH(threshold=near_duplicate_threshold, num_perm=num_perm)
        self.first = MinHash(num_perm=num_perm)  # its permutations are drawn once, not per passage
        self.seen: set[bytes] = set()
        self.lsh_keys = count()
        self.counts = dict.fromkeys(
            ("input", "failed", "empty", "truncated", "exact_duplicates", "near_duplicates", "kept"), 0
        )

    def _exact_duplicate(self, text: str) -> bool:
        digest = hashlib.blake2b(_normalised(text).encode(), digest_size=16).digest()
        if digest in self.seen:
            return True
        self.seen.add(digest)
        return False

    def _near_duplicate(self, text: str) -> bool:
        signature = MinHash(self.num_perm, permutations=self.first.permutations, scheme=self.first.scheme)
        signature.update_batch([s.encode() for s in _shingles(text, self.shingle_size)])
        if self.lsh.query(signature):
            return True
        self.lsh.insert(str(next(self.lsh_keys)), signature)
        return False

    def __call__(self, passages: pd.DataFrame) -> pd.DataFrame:
        self.counts["input"] += len(passages)
        kept = passages
        for name, condition in (
            ("failed", lambda df: ~df["ok"].astype(bool)),
            ("empty", lambda df: df["text"].str.strip() == ""),
            ("truncated", lambda df: df["finish_reason"] == "length"),  # the teacher hit max_tokens
            ("exact_duplicates", lambda df: df["text"].map(self._exact_duplicate)),
            ("near_duplicates", lambda df: df["text"].map(self._near_duplicate)),
        ):
            drop = condition(kept).astype(bool)
            self.counts[name] += int(drop.sum())
            kept = kept[~drop]
        self.counts["kept"] += len(kept)
        return kept.reset_index(drop=True)


def filter_passages(
    passages: pd.DataFrame, near_duplicate_threshold: float = 0.85
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The passages that survive every filter (first occurrence kept), and each filter's count."""
    keep = PassageFilter(near_duplicate_threshold)
    return keep(passages), keep.counts


def write_chunks(chunks: Iterable[pd.DataFrame], path: str | Path) -> int:
    """Each chunk as a Parquet row group of `path`, as it comes (ChunkWriter); the rows written."""
    with ChunkWriter(path) as writer:
        for chunk in chunks:
            writer.write(chunk)
    return writer.rows


def facts_of(documents: pd.DataFrame) -> list:
    """Each document's `fact_entities` (alia.kd.faithfulness), none where it has no such column (a
    corpus not written from recorded facts)."""
    if "fact_entities" in documents:
        return documents["fact_entities"].tolist()
    return [[] for _ in range(len(documents))]


def rephrase_requests(kd_base: pd.DataFrame, style: str, documents: int) -> pd.DataFrame:
    """The first `documents` KD_Base documents to rewrite in `style` (template variable `document`)."""
    base = kd_base.head(documents)
    return pd.DataFrame(
        {
            "doc_id": [doc_id("kd_rephrase", style, source) for source in base["doc_id"]],
            "source_doc_id": base["doc_id"].to_numpy(),
            "equipment_class": base["equipment_class"].to_numpy(),
            "relation": base["relation"].to_numpy(),
            "fact_entities": facts_of(base),
            "style": style,
            "document": base["text"].to_numpy(),
        }
    )


QA_COLUMNS = [
    "doc_id",
    "source_doc_id",
    "equipment_class",
    "question",
    "answer",
    "context",
    "oracle_in_context",
    "fact_entities",
]


def qa_requests(kd_base: pd.DataFrame, documents: int, min_pairs: int) -> pd.DataFrame:
    base = kd_base.head(documents)
    return pd.DataFrame(
        {
            "source_doc_id": base["doc_id"].to_numpy(),
            "equipment_class": base["equipment_class"].to_numpy(),
            "fact_entities": facts_of(base),
            "document": base["text"].to_numpy(),
            "min_pairs": min_pairs,
        }
    )


def qa_records(answers: pd.DataFrame, parsed: list) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """(KD_QA: one instruction record per question, no context; the summaries by source document;
    counts). Pairs whose question is no question, and exact duplicate questions, are dropped and counted."""
    # token counts are those of the answer that held the pair (the summary and all its pairs)
    provenance = ["prompt", "prompt_hash", "teacher_model", "cache_key", "prompt_tokens", "completion_tokens"]
    rows, summaries = [], []
    for answer, qa in zip(answers.to_dict("records"), parsed, strict=True):
        if qa is None:
            continue
        summaries.append({"source_doc_id": answer["source_doc_id"], "summary": qa.summary})
        for i, pair in enumerate(qa.qa):
            rows.append(
                {
                    "doc_id": doc_id("kd_qa", answer["source_doc_id"], i),
                    "source_doc_id": answer["source_doc_id"],
                    "equipment_class": answer["equipment_class"],
                    "question": pair.question.strip(),
                    "answer": pair.answer.strip(),
                    "context": "",
                    "oracle_in_context": False,
                    "fact_entities": answer.get("fact_entities", []),  # its document's
                }
                | {k: answer[k] for k in provenance}
            )
    records = pd.DataFrame(rows, columns=[*QA_COLUMNS, *provenance])
    # a question is a few words ending with "?": not "...", a stray JSON fragment or an instruction
    # echoed back, as a small teacher writes
    words = records["question"].str.findall(r"[A-Za-z]+").str.len()
    is_question = records["question"].str.endswith("?") & (words >= 3)
    duplicated = records["question"].map(_normalised).duplicated() & is_question
    counts = {
        "pairs": len(records),
        "not_questions": int((~is_question).sum()),
        "duplicate_questions": int(duplicated.sum()),
    }
    summaries = pd.DataFrame(summaries, columns=["source_doc_id", "summary"])
    return records[is_question & ~duplicated].reset_index(drop=True), summaries, counts


def raft_records(
    qa: pd.DataFrame, summaries: pd.DataFrame, distractors: int, oracle_probability: float, seed: int
) -> pd.DataFrame:
    """KD_QA-RAFT: each question with a context of summaries, as in RAFT (Zhang et al., 2024): with
    probability `oracle_probability` its own document's summary plus `distractors` summaries of other
    documents, otherwise distractors only; the order is shuffled. Seeded, so reproducible."""
    rng = np.random.default_rng(seed)
    by_doc = dict(zip(summaries["source_doc_id"], summaries["summary"], strict=True))
    out = qa.copy()
    contexts, oracle = [], []
    for source in out["source_doc_id"]:
        others = [s for d, s in by_doc.items() if d != source]
        chosen = list(rng.choice(others, size=min(distractors, len(others)), replace=False)) if others else []
        with_oracle = bool(rng.random() < oracle_probability)
        if with_oracle:
            chosen.append(by_doc[source])
        rng.shuffle(chosen)
        contexts.append("\n\n".join(chosen))
        oracle.append(with_oracle)
    out["context"], out["oracle_in_context"] = contexts, oracle
    out["doc_id"] = [doc_id("kd_qa_raft", d) for d in qa["doc_id"]]
    return out


def _corpus_files(path: Path) -> list[Path]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such corpus (its stage has not run: `dvc repro`)")
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path}: no Parquet corpus files")
    return files


def read_corpus(path: str | Path) -> pd.DataFrame:
    """A corpus Parquet file, or every Parquet file of a folder (e.g. the four kd_rephrase styles)."""
    return pd.concat([read_parquet(f) for f in _corpus_files(Path(path))], ignore_index=True)


def corpus_batches(path: str | Path, batch_size: int = 1000) -> Iterator[pd.DataFrame]:
    """A corpus (as `read_corpus` finds it) `batch_size` rows at a time: a paper-scale corpus is never
    read whole."""
    for file in _corpus_files(Path(path)):
        with parquet_errors(file):  # a corrupt file is named, whichever batch finds it
            batches = pq.ParquetFile(file).iter_batches(batch_size=batch_size)
        while True:
            with parquet_errors(file):
                batch = next(batches, None)
            if batch is None:
                break
            yield batch.to_pandas()


def qa_text(question: str, answer: str, context: str = "") -> str:
    """A QA record as one training text: its context first (a RAFT record), the question, the answer."""
    return f"{context}\n\n{question}\n{answer}" if context else f"{question}\n{answer}"


def corpus_texts(corpus: pd.DataFrame) -> list[str]:
    """The text a student trains on, per row: a document's `text` as it is; a QA record (kd_qa,
    kd_qa_raft, control_qa) by `qa_text`."""
    if "text" in corpus:
        return corpus["text"].tolist()
    contexts = corpus["context"].fillna("") if "context" in corpus else [""] * len(corpus)
    return [qa_text(q, a, c) for q, a, c in zip(corpus["question"], corpus["answer"], contexts, strict=True)]


def token_counts(tokenizer, texts: list[str], batch_size: int = 1000) -> int:  # noqa: ANN001 - any tokenizer
    """Tokens of all `texts`, tokenised `batch_size` at a time: a paper-scale corpus's token ids never
    sit in memory at once (all 112,000 passages in one call took corpus_stats to 3.8 GB)."""
    return sum(
        len(ids)
        for start in range(0, len(texts), batch_size)
        for ids in tokenizer(texts[start : start + batch_size], add_special_tokens=False)["input_ids"]
    )


# --- KD_Extend ------------------------------------------------------------------------------

ENTITY_COLUMNS = ["source_doc_id", "equipment_class", "kind", "entity", "entity_raw", "cache_key"]


def key_entity_rows(
    answers: pd.DataFrame, parsed: list, rules: Canonicaliser, sensors: set[str], failure_modes: set[str]
) -> pd.DataFrame:
    """One row per (document, key entity). An entity that names a known sensor or failure mode is
    that node (kind sensor / failure_mode); anything else is a new `entity`. The class itself is skipped."""
    rows = []
    for answer, extracted in zip(answers.to_dict("records"), parsed, strict=True):
        if extracted is None:
            continue
        own = normalise_text(answer["equipment_class"])
        seen: set[tuple[str, str]] = set()
        for raw in extracted.entities:
            label = rules.label(raw).strip(" .;:")
            if label == own or not label:
                continue
            kind = "sensor" if label in sensors else "failure_mode" if label in failure_modes else "entity"
            if (kind, label) not in seen:
                seen.add((kind, label))
                rows.append(
                    [
                        answer["source_doc_id"],
                        answer["equipment_class"],
                        kind,
                        label,
                        raw,
                        answer["cache_key"],
                    ]
                )
    return pd.DataFrame(rows, columns=ENTITY_COLUMNS)


def extend_requests(entities: pd.DataFrame, entities_per_class: int, pairs_per_class: int) -> pd.DataFrame:
    """Entity-centric and interaction-centric documents to write: per class, the entities named in
    most of its documents, and the pairs of entities named together most often."""
    rows = []
    for cls, group in entities.groupby("equipment_class", sort=False):
        counts = Counter(group["entity"])  # one count per document: entities are unique within one
        for entity, _ in counts.most_common(entities_per_class):
            rows.append([doc_id("kd_extend", cls, entity), cls, "entity", entity, "", [[entity]]])
        pairs = Counter(
            pair
            for _, doc in group.groupby("source_doc_id", sort=False)
            for pair in combinations(sorted(doc["entity"]), 2)
        )
        for (a, b), _ in pairs.most_common(pairs_per_class):
            rows.append([doc_id("kd_extend", cls, a, b), cls, "interaction", a, b, [[a], [b]]])
    columns = ["doc_id", "equipment_class", "kind", "entity", "other", "fact_entities"]
    return pd.DataFrame(rows, columns=columns)
