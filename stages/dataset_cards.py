"""Stage dataset_cards: a dataset card for every corpus (schema, rows, the prompts and teacher that wrote
it, its CC-BY-4.0 licence), from the corpus's own provenance columns, and how faithful its rows are
to their facts (alia.kd.faithfulness.card_section).

python stages/dataset_cards.py <cards_dir> --corpora <corpus>...

A corpus is named by its file or folder (data/corpora/kd_qa.parquet: kd_qa); its card is
<cards_dir>/<name>.md.
"""

import argparse
import shutil
from pathlib import Path

from alia.cards import write_dataset_card
from alia.core.io import write_text
from alia.core.tracking import check_outputs
from alia.kd.faithfulness import card_section

parser = argparse.ArgumentParser()
parser.add_argument("cards_dir", type=Path)
parser.add_argument("--corpora", type=Path, nargs="+", required=True)
args = parser.parse_args()
check_outputs(args.cards_dir)

shutil.rmtree(args.cards_dir, ignore_errors=True)  # a corpus taken off the list loses its card
for corpus in args.corpora:
    card = write_dataset_card(corpus, args.cards_dir / f"{corpus.name.removesuffix('.parquet')}.md")
    if section := card_section(corpus):
        write_text(card, card.read_text(encoding="utf-8") + "\n" + section)
    print(f"wrote {card}")
