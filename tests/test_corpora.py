import pandas as pd
import pyarrow.parquet as pq

from alia.kd.corpora import PassageFilter, corpus_batches, filter_passages, knowledge_requests, write_chunks


def passages(texts, ok=None, finish=None):
    n = len(texts)
    return pd.DataFrame({"text": texts, "ok": ok or [True] * n, "finish_reason": finish or ["stop"] * n})


BASE = (
    "Vibration sensors on centrifugal pumps reveal misalignment, unbalance and bearing wear long before "
    "a failure, because each fault changes the spectrum of the casing vibration in its own way."
)


def test_each_filter_counts_what_it_removes():
    base = BASE
    texts = [
        base,
        "",  # empty
        # truncated: the teacher hit max_tokens
        "Oil debris analysis counts the wear particles in the lubricant of a gearbox and trends them",
        "  " + base.upper() + " ",  # exact duplicate after case and space normalisation
        base.replace("long before a failure", "well before any failure"),  # near duplicate
        "Thermography shows hot spots on electrical connections of switchgear.",
        "Never parsed",  # failed
    ]
    ok = [True] * 6 + [False]
    finish = ["stop", "stop", "length", "stop", "stop", "stop", "stop"]
    kept, counts = filter_passages(passages(texts, ok, finish), near_duplicate_threshold=0.5)
    assert counts == {
        "input": 7,
        "failed": 1,
        "empty": 1,
        "truncated": 1,
        "exact_duplicates": 1,
        "near_duplicates": 1,
        "kept": 2,
    }
    assert kept["text"].tolist() == [texts[0], texts[5]]


def test_filtering_chunk_by_chunk_finds_duplicates_across_chunks(tmp_path):
    texts = [
        BASE,
        "Thermography shows hot spots on electrical connections of switchgear.",
        BASE.upper(),  # an exact duplicate of the first chunk's passage
        BASE.replace("long before a failure", "well before any failure"),  # a near duplicate of it
        "Oil debris analysis counts the wear particles in the lubricant of a gearbox.",
    ]
    whole, whole_counts = filter_passages(passages(texts), near_duplicate_threshold=0.5)
    keep = PassageFilter(near_duplicate_threshold=0.5)
    out = tmp_path / "corpus.parquet"
    rows = write_chunks((keep(passages(texts[i : i + 2])) for i in range(0, 5, 2)), out)
    assert keep.counts == whole_counts and whole_counts["exact_duplicates"] == 1
    assert whole_counts["near_duplicates"] == 1 and rows == whole_counts["kept"] == 3
    written = pd.read_parquet(out)
    assert written.equals(whole) and written["text"].tolist() == [texts[0], texts[1], texts[4]]
    # the third chunk was all duplicates: only the first and the last became row groups
    assert pq.ParquetFile(out).metadata.num_row_groups == 2
    assert pd.concat(corpus_batches(out, batch_size=2), ignore_index=True).equals(written)


def test_a_corpus_with_nothing_kept_is_an_empty_file_with_its_columns(tmp_path):
    keep = PassageFilter()
    out = tmp_path / "empty.parquet"
    assert write_chunks([keep(passages(["", " "]))], out) == 0
    assert list(pd.read_parquet(out)) == ["text", "ok", "finish_reason"] and keep.counts["empty"] == 2


def test_distinct_passages_survive():
    texts = [
        f"Sensor {i} watches failure mode {i * 7} on asset {i * 13} with its own method {i}."
        for i in range(20)
    ]
    kept, counts = filter_passages(passages(texts))
    assert counts["kept"] == 20 and counts["near_duplicates"] == 0


def test_knowledge_items_cover_the_three_relations(tables):
    class_fms = tables["class_failure_modes"]
    sensors = pd.DataFrame(
        {
            "equipment_class": ["Pumps"] * 4,
            "rank": [1, 2, 3, 4],
            "sensor": ["vibration", "flow", "oil debris", "current"],
        }
    )
    relevance = pd.DataFrame(
        {
            "equipment_class": ["Pumps"] * 3,
            "failure_mode": ["noise", "vibration", "overheating"],
            "sensor": ["vibration", "flow", "current"],
            "relevant": pd.array([True, False, True], dtype="boolean"),
        }
    )
    items = knowledge_requests(
        ["Pumps"],
        class_fms,
        sensors,
        relevance,
        failure_modes_per_class=5,
        sensors_per_class=3,
        facts_per_document=2,
    )
    assert items["relation"].value_counts().to_dict() == {
        "asset_sensor": 2,
        "asset_failure_mode": 3,
        "asset_sensor_failure_mode": 1,
    }
    assert items.loc[items["relation"] == "asset_sensor", "facts"].tolist() == [
        ["vibration", "flow"],
        ["oil debris"],
    ]
    pairs = items.loc[items["relation"] == "asset_sensor_failure_mode", "facts"].iloc[0]
    assert pairs == ["vibration helps detect noise", "current helps detect overheating"]
    assert items["doc_id"].is_unique and items["doc_id"].str.len().eq(16).all()


def _qa_answers():
    from alia.llm.prompts import QAPair, QAPairs

    answers = pd.DataFrame(
        {
            "source_doc_id": ["d1", "d2", "d3"],
            "equipment_class": ["Pumps", "Valves", "Fans"],
            "prompt": "kd_qa",
            "prompt_hash": "h",
            "teacher_model": "m",
            "cache_key": ["k1", "k2", "k3"],
            "prompt_tokens": [100, 110, 120],
            "completion_tokens": [200, 210, 220],
        }
    )
    pairs = [QAPair(question=f"What is part {i} of a pump?", answer=f"A{i}.") for i in range(3)]
    parsed = [
        QAPairs(summary="Pumps move fluid.", qa=pairs),
        None,  # never valid JSON: no records
        QAPairs(
            summary="Fans move air.",
            qa=[
                QAPair(question="WHAT is part 0 of a  pump?", answer="again"),
                QAPair(question="...", answer="FTS"),
                QAPair(question="Why they are so effective.", answer="x"),
                *pairs[1:],
            ],
        ),
    ]
    return answers, parsed


def test_qa_records_without_context_and_duplicate_questions_dropped():
    from alia.kd.corpora import qa_records

    qa, summaries, counts = qa_records(*_qa_answers())
    # the repeat of part 0 differs only in case and spacing; "..." and a statement are no questions
    assert counts == {"pairs": 8, "not_questions": 2, "duplicate_questions": 3}
    assert qa["question"].tolist() == [f"What is part {i} of a pump?" for i in range(3)]
    assert (qa["context"] == "").all()
    assert qa["cache_key"].tolist() == ["k1"] * 3 and qa["doc_id"].is_unique
    assert qa["completion_tokens"].tolist() == [200] * 3
    assert summaries["summary"].tolist() == ["Pumps move fluid.", "Fans move air."]


def test_raft_contexts_hold_the_oracle_with_the_given_probability():
    from alia.kd.corpora import raft_records

    summaries = pd.DataFrame(
        {"source_doc_id": [f"d{i}" for i in range(10)], "summary": [f"S{i}" for i in range(10)]}
    )
    qa = pd.DataFrame(
        {
            "doc_id": [f"q{i}" for i in range(400)],
            "source_doc_id": [f"d{i % 10}" for i in range(400)],
            "context": "",
            "oracle_in_context": False,
        }
    )
    raft = raft_records(qa, summaries, distractors=2, oracle_probability=0.8, seed=0)
    parts = raft["context"].str.split("\n\n")
    own = [f"S{d[1:]}" for d in raft["source_doc_id"]]
    has_oracle = [o in p for o, p in zip(own, parts, strict=True)]
    assert has_oracle == raft["oracle_in_context"].tolist()
    assert 0.75 < raft["oracle_in_context"].mean() < 0.85  # 400 draws at p = 0.8
    assert (parts.map(len) == raft["oracle_in_context"].map({True: 3, False: 2})).all()
    again = raft_records(qa, summaries, distractors=2, oracle_probability=0.8, seed=0)
    assert again["context"].equals(raft["context"])  # seeded


def _entity_answers():
    from alia.llm.prompts import KeyEntities

    answers = pd.DataFrame(
        {
            "source_doc_id": ["d1", "d2", "d3"],
            "equipment_class": ["Pumps"] * 3,
            "cache_key": ["k1", "k2", "k3"],
        }
    )
    parsed = [
        KeyEntities(summary="s", entities=["Impeller", "Vibration sensor", "Pumps", "mechanical seal"]),
        KeyEntities(summary="s", entities=["impeller", "Mechanical seal", "Overheating", "impeller."]),
        None,  # never valid JSON
    ]
    return answers, parsed


def test_key_entities_map_to_known_nodes_and_skip_the_class(rules):
    from alia.kd.corpora import key_entity_rows

    entities = key_entity_rows(
        *_entity_answers(), rules, sensors={"vibration"}, failure_modes={"overheating"}
    )
    assert entities[["source_doc_id", "kind", "entity"]].values.tolist() == [
        ["d1", "entity", "impeller"],
        ["d1", "sensor", "vibration"],  # "Vibration sensor" is the known sensor
        ["d1", "entity", "mechanical seal"],
        ["d2", "entity", "impeller"],  # "impeller." repeats it: kept once
        ["d2", "entity", "mechanical seal"],
        ["d2", "failure_mode", "overheating"],
    ]


def test_extend_items_pick_frequent_entities_and_pairs(rules):
    from alia.kd.corpora import extend_requests, key_entity_rows

    entities = key_entity_rows(
        *_entity_answers(), rules, sensors={"vibration"}, failure_modes={"overheating"}
    )
    items = extend_requests(entities, entities_per_class=2, pairs_per_class=1)
    assert items[["kind", "entity", "other"]].values.tolist() == [
        ["entity", "impeller", ""],
        ["entity", "mechanical seal", ""],
        ["interaction", "impeller", "mechanical seal"],  # together in both documents
    ]
