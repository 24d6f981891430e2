"""Fact faithfulness: what a KD passage says, read against the facts it was written from.

Every corpus row keeps its facts (`fact_entities`: a list of facts, each a list of entity labels, as
alia.kd.corpora writes them). The check adds three columns beside the passage:

- `fact_coverage`: the share of its facts the passage states. A fact is stated when each of its labels
  is named; one part of a compound label ("arcing / electrical discharge") is enough.
- `foreign_entities`: sensors, failure modes and equipment classes the passage names that are neither
  in its facts nor its own class.
- `contradictions`: "sensor -> failure mode" pairs the passage asserts that the relevance check
  answered "No" for its class, or that the ISO 17359 tables deny for its asset.

Names are found through the project's canonical vocabulary (data/tables/vocabulary.parquet: every
canonical name and raw alias), each word case-folded, spelling-fixed by data/vocabulary_rules.yaml
and singularised, so "Temparature sensors" names temperature. A pair is asserted by a sentence that
names both, uses a detection verb ("detects", "indicates", "monitors", ...) and no negation ("does
not", "cannot", "no", "without", ...): "vibration does not indicate X" asserts nothing.

Limits, by design: one sentence at a time (a pair split across sentences, or a "no" about another
part of the sentence, is not seen); a negated pair is never counted, right or wrong; components and
names outside the vocabulary are not foreign entities unless they are a fact of the passage.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from alia.core.io import ChunkWriter, read_parquet
from alia.data.tables import read_tables
from alia.data.vocabulary import LABEL_SEPARATOR, Canonicaliser, normalise_text
from alia.kd.corpora import corpus_texts

CHECK_COLUMNS = ["fact_coverage", "foreign_entities", "contradictions"]
JUDGE_COLUMNS = ["judge_faithfulness", "judge_fluency", "judge_reason"]  # NaN / "" where no judge ran
# single words that name an ISO 14224 failure mode ("Other", "Unknown") but mostly mean nothing
_NOT_NAMES = {("other",), ("unknown",)}
_NEGATIONS = {"not", "no", "never", "cannot", "without", "neither", "nor", "none", "unable", "nothing"}
_DETECTS = re.compile(
    r"^(detect|indicat|monitor|measur|reveal|signal|sign|identif|sens|warn|alert|diagnos|track|show|"
    r"flag|spot|reflect|predict|catch|recogni|captur|trend|point|help|tell|expos)"
)
_SENTENCES = re.compile(r"[.!?;\n]+")


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@dataclass
class Vocabulary:
    """Entity names as word tuples: `names[words]` is the set of (kind, name) they name, each name in
    its words (`words`) joined by spaces: "Pumps" and "Pump" are the name "pump"."""

    spelling: dict[str, str] = field(default_factory=dict)
    names: dict[tuple[str, ...], set[tuple[str, str]]] = field(default_factory=dict)
    first: set[str] = field(default_factory=set)  # the first words of names: where a match can start

    def words(self, text: str) -> tuple[str, ...]:
        """A text as the words names are matched on: normalised, spelling-fixed, singular."""
        return tuple(_singular(self.spelling.get(w, w)) for w in re.findall(r"[^\W_]+", normalise_text(text)))

    def add(self, kind: str, name: str, spelling: str | None = None) -> None:
        key = self.words(spelling or name)
        if key and key not in _NOT_NAMES:
            self.names.setdefault(key, set()).add((kind, " ".join(self.words(name))))
            self.first.add(key[0])

    @property
    def longest(self) -> int:
        return max(map(len, self.names), default=1)

    @classmethod
    def from_tables(cls, tables: dict[str, pd.DataFrame], rules: Canonicaliser) -> Vocabulary:
        """Sensors and failure modes (canonical names and raw aliases) and equipment classes and
        assets, from the tables stage's tables."""
        vocabulary = cls(spelling=dict(rules.spelling))
        for row in tables["vocabulary"].itertuples():
            vocabulary.add(row.kind, row.name)
            for alias in rules.names(row.alias):  # an alias part that is this name, spelled raw
                if alias == row.name:
                    vocabulary.add(row.kind, row.name, row.alias)
        for name in tables["equipment_classes"]["equipment_class"]:
            vocabulary.add("class", name)
        for name in tables["eval_assets"]["asset"]:
            vocabulary.add("class", name)
        return vocabulary

    def mentions(self, words: Sequence[str]) -> list[tuple[str, str]]:
        """The (kind, name)s named in a word sequence, longest match first, left to right."""
        found, i, longest = [], 0, self.longest
        while i < len(words):
            if words[i] not in self.first:
                i += 1
                continue
            for n in range(min(longest, len(words) - i), 0, -1):
                if (hit := self.names.get(tuple(words[i : i + n]))) is not None:
                    found += sorted(hit)
                    i += n
                    break
            else:
                i += 1
        return found


def denials(relevance: pd.DataFrame | None, matrix: pd.DataFrame | None) -> set[tuple[str, str, str]]:
    """(class, sensor, failure mode) triples the facts deny, every compound label split into its names:
    the relevance check's "No" answers and the ISO 17359 tables' empty cells."""
    denied: set[tuple[str, str, str]] = set()
    for table, owner in ((relevance, "equipment_class"), (matrix, "asset")):
        if table is None or table.empty:
            continue
        no = table[table["relevant"].fillna(True).eq(False)]  # an unanswered check denies nothing
        for cls, sensor, failure_mode in zip(no[owner], no["sensor"], no["failure_mode"], strict=True):
            for s in str(sensor).split(LABEL_SEPARATOR):
                for f in str(failure_mode).split(LABEL_SEPARATOR):
                    denied.add((cls, s, f))
    return denied


class FactChecker:
    """Adds CHECK_COLUMNS to passages with `equipment_class` and `fact_entities` columns."""

    def __init__(self, vocabulary: Vocabulary, denied: Iterable[tuple[str, str, str]] = ()):
        self.vocabulary = vocabulary
        self.denied = {tuple(" ".join(vocabulary.words(n)) for n in triple) for triple in denied}

    def check(self, text: str, equipment_class: str, facts: Iterable[Iterable[str]]) -> dict:
        """One passage's coverage, foreign entities and contradictions."""
        v = self.vocabulary
        sentences = [v.words(s) for s in _SENTENCES.split(text)]
        spoken = " " + " | ".join(" ".join(s) for s in sentences) + " "
        named = [v.mentions(s) for s in sentences]
        mentioned = {name for found in named for _, name in found}
        # a fact label's parts, as words: named through the vocabulary (an alias too) or word for word
        labels = [
            [[" ".join(v.words(p)) for p in label.split(LABEL_SEPARATOR)] for label in fact] for fact in facts
        ]

        def said(parts: list[str]) -> bool:
            return any(p and (p in mentioned or f" {p} " in spoken) for p in parts)

        stated = [all(said(parts) for parts in fact) for fact in labels]
        cls = " ".join(v.words(equipment_class))
        own = set(cls.split())
        in_facts = {p for fact in labels for parts in fact for p in parts}
        foreign = sorted(
            {
                name
                for found in named
                for kind, name in found
                if not any(f" {name} " in f" {f} " for f in in_facts)  # a fact, or words of one
                and not (kind == "class" and set(name.split()) <= own)
            }
        )
        contradictions = sorted(
            {
                f"{s} -> {f}"
                for sentence, found in zip(sentences, named, strict=True)
                if any(_DETECTS.match(w) for w in sentence) and not _negated(sentence)
                for ks, s in found
                if ks == "sensor"
                for kf, f in found
                if kf == "failure_mode" and (cls, s, f) in self.denied
            }
        )
        return {
            "fact_coverage": float(np.mean(stated)) if stated else float("nan"),
            "foreign_entities": foreign,
            "contradictions": contradictions,
        }

    def __call__(self, passages: pd.DataFrame, texts: Sequence[str]) -> pd.DataFrame:
        """`passages` with CHECK_COLUMNS (replaced where present), `texts` being what each row says."""
        checked = [
            self.check(text, cls, facts)
            for text, cls, facts in zip(
                texts, passages["equipment_class"], passages["fact_entities"], strict=True
            )
        ]
        out = passages.copy()
        for column in CHECK_COLUMNS:
            out[column] = [c[column] for c in checked]
        return out


def _negated(words: Sequence[str]) -> bool:
    # "does not", "cannot", "no"; normalise_text keeps "doesn't" as the words "doesn" and "t"
    return any(w in _NEGATIONS or w == "t" for w in words)


# --- filters by params ----------------------------------------------------------------------------

# The fact filters, in order: a setting of the stage's `filters:` and the rows it drops (None: off).
FILTERS = {
    "min_fact_coverage": lambda df, x: df["fact_coverage"].fillna(1.0) < x,
    "max_foreign_entities": lambda df, x: df["foreign_entities"].map(len) > x,
    "max_contradictions": lambda df, x: df["contradictions"].map(len) > x,
    "min_judge_faithfulness": lambda df, x: df["judge_faithfulness"] < x,  # unjudged (NaN): kept
}


def passing(checked: pd.DataFrame, filters: dict[str, float | None]) -> np.ndarray:
    """Which checked rows pass every filter that is set."""
    keep = np.ones(len(checked), bool)
    for name, drops in FILTERS.items():
        if filters.get(name) is not None:
            keep &= ~drops(checked, filters[name]).to_numpy(bool)
    return keep


class FactFilter:
    """Checks each chunk of a corpus (FactChecker), drops the rows its `filters` settings reject, and
    writes those rows, with the filter's name as `reason`, to the `rejects` file; with a `judge`
    (alia.kd.judge), its scores are columns too. `counts` and `seconds` (the check's own time) add up
    over the chunks. A context manager: leaving it closes the
    rejects file, which exists (maybe empty) whatever was rejected."""

    def __init__(
        self,
        checker: FactChecker,
        filters: dict[str, float | None] | None,
        rejects: str | Path,
        judge: Callable[[pd.DataFrame, Sequence[str]], pd.DataFrame] | None = None,
    ):
        filters = filters or {}
        if unknown := set(filters) - set(FILTERS):
            raise ValueError(f"filters: unknown setting(s) {sorted(unknown)}; known: {sorted(FILTERS)}")
        if judge is None and filters.get("min_judge_faithfulness") is not None:
            raise ValueError(
                "filters.min_judge_faithfulness is set but the judge is off (params: judge.enabled)"
            )
        self.checker, self.filters, self.rejects = checker, filters, ChunkWriter(rejects)
        self.judge = judge
        self.counts = {"checked": 0, **dict.fromkeys(FILTERS, 0), "kept": 0}
        self.seconds = 0.0

    def __call__(self, passages: pd.DataFrame) -> pd.DataFrame:
        start, texts = time.perf_counter(), corpus_texts(passages)
        checked = self.checker(passages, texts)
        self.seconds += time.perf_counter() - start
        if self.judge is not None:
            checked = self.judge(checked, texts)
        else:
            checked = checked.assign(judge_faithfulness=np.nan, judge_fluency=np.nan, judge_reason="")
        self.counts["checked"] += len(checked)
        for name, drops in FILTERS.items():
            if self.filters.get(name) is None:
                continue
            drop = drops(checked, self.filters[name]).to_numpy(bool)
            self.counts[name] += int(drop.sum())
            self.rejects.write(checked[drop].assign(reason=name))
            checked = checked[~drop]
        self.counts["kept"] += len(checked)
        return checked.reset_index(drop=True)

    def __enter__(self) -> FactFilter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.rejects.__exit__(*exc)

    def metrics(self, corpus_file: str | Path) -> dict:
        """What a stage reports: the check's counts and the kept corpus's faithfulness (`summary`)."""
        kept = read_parquet(corpus_file, columns=CHECK_COLUMNS) if self.counts["kept"] else None
        return {
            "fact_checks": dict(self.counts),
            "faithfulness": summary(kept if kept is not None else pd.DataFrame(columns=CHECK_COLUMNS)),
        }

    def run_stats(self) -> dict:
        """The check's seconds per 1,000 rows: this run's alone, so MLflow and the printed line get it
        (`finish_stage`'s run_stats), not the metrics file."""
        per_1000 = 1000 * self.seconds / self.counts["checked"] if self.counts["checked"] else 0.0
        return {"fact_checks": {"seconds_per_1000": round(per_1000, 3)}}


def summary(corpus: pd.DataFrame) -> dict[str, float | int]:
    """A corpus's faithfulness in numbers: passages, the share with every fact stated, mean coverage,
    mean foreign entities per passage, contradictions and passages with one."""
    coverage = corpus["fact_coverage"].dropna()
    foreign = corpus["foreign_entities"].map(len)
    contradictions = corpus["contradictions"].map(len)
    return {
        "passages": len(corpus),
        "full_coverage": round(float((coverage >= 1.0).mean()), 4) if len(coverage) else None,
        "mean_coverage": round(float(coverage.mean()), 4) if len(coverage) else None,
        "mean_foreign_entities": round(float(foreign.mean()), 3) if len(corpus) else None,
        "contradictions": int(contradictions.sum()),
        "passages_with_contradictions": int((contradictions > 0).sum()),
    }


def card_section(corpus: str | Path) -> str:
    """A dataset card's section on the corpus's faithfulness (`summary`), "" for a corpus without the
    checks' columns (the positive controls, written from the tables by template)."""
    files = sorted(Path(corpus).glob("*.parquet")) if Path(corpus).is_dir() else [Path(corpus)]
    if not all(set(CHECK_COLUMNS) <= set(pq.read_schema(f).names) for f in files):
        return ""
    facts = summary(pd.concat([read_parquet(f, columns=CHECK_COLUMNS) for f in files], ignore_index=True))
    rows = "\n".join(f"| {key} | {value} |" for key, value in facts.items())
    return (
        "## Faithfulness to its facts\n\nEach row checked against the facts it was written from "
        "(alia.kd.faithfulness; docs/corpora.md says what each figure measures and its limits).\n\n"
        f"| measure | value |\n|---|---|\n{rows}\n"
    )


def load_checker(
    tables_dir: str | Path, rules_file: str | Path, relevance_dir: str | Path | None = None
) -> FactChecker:
    """A checker: the tables' vocabulary, the denials of the tables and, with `relevance_dir`, of the
    relevance check (relevance_dir/relevance.parquet)."""
    tables = read_tables(tables_dir)
    relevance = read_parquet(Path(relevance_dir) / "relevance.parquet") if relevance_dir else None
    return FactChecker(
        Vocabulary.from_tables(tables, Canonicaliser.from_yaml(rules_file)),
        denials(relevance, tables["fm_sensor_matrix"]),
    )
