import shutil
from pathlib import Path

import pytest

from alia.tables import build_tables
from alia.vocabulary import Canonicaliser

REPO = Path(__file__).resolve().parents[1]
RAW = REPO / "data" / "raw"
RULES = REPO / "data" / "vocabulary_rules.yaml"


@pytest.fixture(scope="session")
def rules() -> Canonicaliser:
    return Canonicaliser.from_yaml(RULES)


@pytest.fixture(scope="session")
def tables(rules):
    return build_tables(RAW, rules)


@pytest.fixture
def raw_copy(tmp_path) -> Path:
    """A writable copy of data/raw for the bad-input cases."""
    return Path(shutil.copytree(RAW, tmp_path / "raw"))
