"""The embedder's tasks: sizes, splits disjoint by asset, augmentation rate, the taxonomy seed."""

import pandas as pd
import pytest
from conftest import RAW, REPO

from alia.embedder.tasks import (
    ENTITY_KINDS,
    INSTRUCTIONS,
    add_instructions,
    assign_splits,
    augment,
    description_key,
    description_lookup,
    finish,
    load_taxonomy,
    query_entities,
    seed_descriptions,
    split_fractions,
    task_rows,
)

TAXONOMY = REPO / "data" / "iso14224_taxonomy.yaml"


@pytest.fixture(scope="module")
def rows(tables) -> pd.DataFrame:
    rows = task_rows(tables["fm_sensor_matrix"], load_taxonomy(TAXONOMY))
    return finish(augment(add_instructions(assign_splits(rows, (0.6, 0.2, 0.2), 0), 0), {}, 0.0, 0))


def test_nine_tasks_and_their_sizes(rows, tables):
    sizes = rows["task"].value_counts().to_dict()
    assert set(sizes) == set(INSTRUCTIONS) == set(ENTITY_KINDS)
    matrix = tables["fm_sensor_matrix"]
    ticked = matrix[matrix["relevant"]]
    assert sizes["A2S"] == 10
    assert sizes["FM2S"] == len(ticked.groupby(["asset", "failure_mode"]))  # failure modes with a sensor
    assert sizes["S2FM"] == len(ticked.groupby(["asset", "sensor"]))
    assert sizes["FM2CMP"] == len(matrix.groupby(["asset", "failure_mode"]))  # every one has a component
    assert (sizes["C2FM"], sizes["FM2CLS"], sizes["E2CAT"]) == (27, 58, 9)
    assert (sizes["E2CLT"], sizes["EU2SU"]) == (24, 18)
    # the answer key: an A2S query's sensors are exactly its asset's ticks
    pump = rows[(rows["task"] == "A2S") & (rows["asset"] == "Pump")].iloc[0]
    assert list(pump["relevant"]) == sorted(ticked.loc[ticked["asset"] == "Pump", "sensor"].unique())
    for row in rows.itertuples():
        assert len(row.relevant) and set(row.relevant) <= set(row.candidates)
    assert rows["query_id"].is_unique


def test_splits_are_disjoint_by_asset(rows):
    asset_rows = rows[rows["asset"] != ""]
    split_of_asset = asset_rows.groupby("asset")["split"].unique()
    assert split_of_asset.map(len).eq(1).all()  # an asset is in one split for every task
    assets = split_of_asset.map(lambda s: s[0]).value_counts().to_dict()
    assert assets == {"train": 6, "validation": 2, "test": 2}
    train = set(asset_rows.loc[asset_rows["split"] == "train", "asset"])
    assert not train & set(asset_rows.loc[asset_rows["split"] == "test", "asset"])
    taxonomy = rows[rows["task"] == "E2CLT"]["split"].value_counts().to_dict()
    assert taxonomy == {"train": 14, "validation": 5, "test": 5}  # 24 at random, 60/20/20
    assert split_fractions(9, (0.6, 0.2, 0.2)) == ["train"] * 5 + ["validation"] * 2 + ["test"] * 2


def test_augmentation_rate_and_content(rows):
    entities = query_entities(rows)
    descriptions = description_lookup(entities.assign(description="About " + entities["entity"] + "."))
    augmented = augment(rows, descriptions, 0.3, seed=1)
    rate = augmented["augmented"].mean()
    assert abs(rate - 0.3) < 3 * (0.3 * 0.7 / len(rows)) ** 0.5  # within 3 standard errors
    fm2s = augmented[(augmented["task"] == "FM2S") & augmented["augmented"]].iloc[0]
    asset, fm = fm2s["entities"]
    assert fm2s["query"] == f"{fm2s['instruction']}\nQuery: {asset}: {fm}\nAbout {asset}. About {fm}."
    plain = augmented[~augmented["augmented"]].iloc[0]
    assert plain["query"] == f"{plain['instruction']}\nQuery: {plain['query_text']}"
    assert augment(rows, descriptions, 1.0, 1)["augmented"].all()
    assert not augment(rows, descriptions, 0.0, 1)["augmented"].any()
    with pytest.raises(ValueError, match="augment_p"):
        augment(rows, descriptions, 1.5, 1)


def test_augment_p_changes_train_queries_only(rows):
    """The augmentation sweep scores every augment_p on the same validation and test queries."""
    entities = query_entities(rows)
    descriptions = description_lookup(entities.assign(description="About " + entities["entity"] + "."))
    runs = [augment(rows, descriptions, p, seed=1, eval_augment_p=0.5) for p in (0.0, 0.4, 1.0)]
    held_out = rows["split"] != "train"
    for run in runs[1:]:
        assert run.loc[held_out, "query"].equals(runs[0].loc[held_out, "query"])
    assert 0.3 < runs[0].loc[held_out, "augmented"].mean() < 0.7
    train = ~held_out
    assert not runs[0].loc[train, "augmented"].any() and runs[2].loc[train, "augmented"].all()
    # augment_p = eval_augment_p draws exactly as one probability for all splits
    assert augment(rows, descriptions, 0.5, 1, 0.5).equals(augment(rows, descriptions, 0.5, 1))


def test_instructions_vary_within_a_task(rows):
    for task, group in rows.groupby("task"):
        assert set(group["instruction"]) <= set(INSTRUCTIONS[task])
        if len(group) >= 10:
            assert group["instruction"].nunique() == 3


def test_shared_descriptions_seed_the_lookup():
    seeds = seed_descriptions(RAW / "descriptions")
    assert seeds[description_key("Electric motor")].startswith("Converts electrical energy")
    assert description_key("amps_volts_load") == description_key("Amps / volts / load") == "amps volts load"
    assert description_key("Arcing/electrical discharge") in seeds


def test_a_bad_taxonomy_is_refused(tmp_path):
    bad = tmp_path / "taxonomy.yaml"
    bad.write_text("categories: {Rotating: []}\n")
    with pytest.raises(ValueError, match="categories.Rotating must be a non-empty list"):
        load_taxonomy(bad)
