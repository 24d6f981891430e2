"""Canonical names for sensors and failure modes.

The ISO tables spell one thing several ways ("temparature", "External leakage — utility medium",
"Control / Signal failure") and pack several things into one cell ("oil leakage/ consumption").
`Canonicaliser` turns a raw spelling into one or more canonical names with rules kept in a reviewed
YAML file (data/vocabulary_rules.yaml), so the raw data is never edited by hand.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# Every dash-like character the tables use for "-".
_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"), "-")
# A compound's label joins its parts with this separator: "bearing wear / bearing damage".
LABEL_SEPARATOR = " / "


def normalise_text(raw: str) -> str:
    """Unicode NFKC, one kind of dash, single spaces, lower case."""
    text = unicodedata.normalize("NFKC", raw).translate(_DASHES)
    return " ".join(text.split()).lower()


@dataclass
class Canonicaliser:
    """Maps a raw sensor or failure-mode spelling to its canonical name(s)."""

    spelling: dict[str, str] = field(default_factory=dict)
    patterns: list[tuple[str, str]] = field(default_factory=list)
    split_overrides: dict[str, list[str]] = field(default_factory=dict)
    synonyms: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Canonicaliser:
        rules = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        unknown = set(rules) - {"spelling", "patterns", "split_overrides", "synonyms"}
        if unknown:
            raise ValueError(f"{path}: unknown section(s) {sorted(unknown)}")
        return cls(
            spelling={k.lower(): v.lower() for k, v in (rules.get("spelling") or {}).items()},
            patterns=[(p, r) for p, r in rules.get("patterns") or []],
            split_overrides={
                _compact_slashes(normalise_text(k)): [normalise_text(p) for p in v]
                for k, v in (rules.get("split_overrides") or {}).items()
            },
            synonyms={normalise_text(k): normalise_text(v) for k, v in (rules.get("synonyms") or {}).items()},
        )

    def clean(self, raw: str) -> str:
        """The whole raw name with spelling and pattern fixes, before any split."""
        text = normalise_text(raw)
        text = re.sub(r"[a-zδ]+", lambda m: self.spelling.get(m.group(0), m.group(0)), text)
        for pattern, replacement in self.patterns:
            text = re.sub(pattern, replacement, text)
        return text

    def names(self, raw: str) -> list[str]:
        """The canonical name(s) of a raw spelling: one, or one per part of an "x/ y" compound."""
        text = self.clean(raw)
        key = _compact_slashes(text)
        parts = self.split_overrides.get(key) or _split_compound(text)
        parts = [self.synonyms.get(p, p) for p in parts]
        return list(dict.fromkeys(parts))  # drop repeated parts, keep order

    def label(self, raw: str) -> str:
        """One readable canonical label for a raw cell: its names joined by " / "."""
        return LABEL_SEPARATOR.join(self.names(raw))


def _compact_slashes(text: str) -> str:
    return re.sub(r"\s*/\s*", "/", text)


def _split_compound(text: str) -> list[str]:
    pieces = [p.strip() for p in text.split("/") if p.strip()]
    if len(pieces) <= 1:
        return [text]
    first_words = pieces[0].split()
    parts = [pieces[0]]
    for piece in pieces[1:]:
        if len(piece.split()) == 1 and len(first_words) > 1:
            # "bearing wear/ damage": the one-word part replaces the head word of the first part.
            parts.append(" ".join([*first_words[:-1], piece]))
        else:
            parts.append(piece)
    return parts
