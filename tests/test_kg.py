import json

import networkx as nx
import pytest

from alia.data.kg import KnowledgeGraph, KnowledgeGraphError, from_tables, node_id


@pytest.fixture(scope="module")
def kg(tables):
    return from_tables(tables)


def test_counts(kg):
    counts = kg.counts()
    assert counts["nodes"] == {
        "asset": 10,
        "equipment_class": 44,
        "failure_mode": 129,
        "sensor": 68,
        "entity": 0,
        "total": 251,
    }
    assert counts["edges"] == {
        "experiences": 762,
        "monitored_by": 241,
        "relevant_to": 568,
        "related_to": 0,
        "co_occurs_with": 0,
        "total": 1571,
    }
    assert counts["edges_by_source"] == {"table": 1571, "llm": 0}


def test_relevance_edges_follow_the_ticks(kg, tables):
    m = tables["fm_sensor_matrix"]
    pump = m[(m["asset"] == "Pump") & (m["sensor"] == "vibration")]
    expected = {node_id("failure_mode", fm) for fm in pump.loc[pump["relevant"], "failure_mode"]}
    assert set(kg.neighbours("sensor:vibration", "relevant_to", asset="asset:Pump")) == expected
    assert "failure_mode:misalignment" in expected
    # every tick of a plain (non-compound) cell is one edge; ticks of compounds fan out to their parts
    assert kg.counts()["edges"]["relevant_to"] >= int(m["relevant"].sum()) - 10


def test_compound_cells_link_every_part(kg):
    sensors = kg.neighbours("asset:Aero gas turbine", "monitored_by")
    assert {"sensor:compressor pressure", "sensor:pressure ratio"} <= set(sensors)
    assert "sensor:temparature" not in kg.graph


def test_without_eval_assets_has_only_d_source(tables):
    counts = from_tables(tables, include_eval_assets=False).counts()
    assert counts["nodes"]["asset"] == 0 and counts["nodes"]["sensor"] == 0
    assert counts["nodes"]["equipment_class"] == 44
    assert counts["edges"]["relevant_to"] == 0


def test_write_read_round_trip(kg, tmp_path):
    kg.write(tmp_path)
    back = KnowledgeGraph.read(tmp_path)
    assert back.counts() == kg.counts()
    assert back.edges_frame().equals(kg.edges_frame())
    viewable = nx.read_graphml(tmp_path / "graph.graphml")
    assert viewable.number_of_nodes() == 251 and viewable.number_of_edges() == 1571


def test_llm_stage_extends_the_graph(kg, tmp_path):
    """The path later LLM stages take: read, add llm-provenance nodes and edges, write."""
    kg.write(tmp_path / "v1")
    grown = KnowledgeGraph.read(tmp_path / "v1")
    cls = node_id("equipment_class", "Pumps")
    sensor = grown.add_node("sensor", "suction pressure", "llm", "sensor_discovery", prompt_hash="ab12")
    assert grown.add_edge(cls, sensor, "monitored_by", "llm", "sensor_discovery")
    assert not grown.add_edge(cls, sensor, "monitored_by", "llm", "sensor_discovery")  # idempotent
    grown.add_edge(
        sensor,
        "failure_mode:low output",
        "relevant_to",
        "llm",
        "relevance_check",
        asset=cls,
        reason="a low suction pressure starves the pump",
    )
    grown.write(tmp_path / "v2")
    again = KnowledgeGraph.read(tmp_path / "v2")
    assert again.counts()["edges_by_source"] == {"table": 1571, "llm": 2}
    assert again.counts()["nodes"]["sensor"] == 69
    edge = again.edges_frame().query("source == 'llm' and type == 'relevant_to'").iloc[0]
    assert json.loads(edge["attrs"]) == {"reason": "a low suction pressure starves the pump"}
    assert again.graph.nodes[sensor]["attrs"] == {"prompt_hash": "ab12"}


@pytest.mark.parametrize(
    "src, dst, edge_type, asset, message",
    [
        ("sensor:vibration", "failure_mode:misalignment", "causes", "", "unknown edge type 'causes'"),
        (
            "asset:Pump",
            "asset:Fan",
            "experiences",
            "",
            "target must be one of \\['failure_mode'\\], not asset",
        ),
        (
            "failure_mode:misalignment",
            "sensor:vibration",
            "relevant_to",
            "asset:Pump",
            "source must be one of",
        ),
        (
            "sensor:vibration",
            "failure_mode:misalignment",
            "relevant_to",
            "",
            "needs an existing asset context",
        ),
        (
            "asset:Pump",
            "sensor:no such sensor",
            "monitored_by",
            "",
            "target node 'sensor:no such sensor' does not",
        ),
    ],
)
def test_schema_violations(kg, src, dst, edge_type, asset, message):
    with pytest.raises(KnowledgeGraphError, match=message):
        kg.add_edge(src, dst, edge_type, "table", asset=asset)


def test_bad_node_type_and_provenance():
    kg = KnowledgeGraph()
    with pytest.raises(KnowledgeGraphError, match="unknown node type 'component'"):
        kg.add_node("component", "impeller", "llm")
    with pytest.raises(KnowledgeGraphError, match="unknown provenance source 'manual'"):
        kg.add_node("sensor", "vibration", "manual")
