"""A typed knowledge graph of assets, equipment classes, failure modes and sensors.

The graph is a networkx MultiDiGraph whose nodes and edges are checked against a small schema:

    asset | equipment_class  --experiences-->    failure_mode
    asset | equipment_class  --monitored_by-->   sensor
    sensor                   --relevant_to-->    failure_mode            (in one asset's or class's context)
    asset | equipment_class  --related_to-->     entity | sensor | failure_mode   (key entities, KD_Extend)
    entity | sensor | f.m.   --co_occurs_with--> entity | sensor | failure_mode   (in one class's context)

Every node and edge records its provenance: `source` is "table" (from the ISO tables) or "llm"
(added from a teacher stage's facts), `origin` names the file or prompt it came from. `build` makes
the one graph of the pipeline (stage kg): `from_tables`, then the facts of sensor_discovery,
relevance_check and kd_extend, each added through the same `add_node`/`add_edge`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import pandas as pd
import pyarrow as pa

from alia.core.io import read_arrow, replacing, write_parquet
from alia.data.tables import (
    ASSET_FACTS_FILE,
    EQUIPMENT_CLASSES_FILE,
    EVAL_ASSETS_FILE,
    MATRIX_FILE,
    SourceTables,
)
from alia.data.vocabulary import LABEL_SEPARATOR

if TYPE_CHECKING:  # annotations only: the graph needs no prompt code
    from alia.llm.prompts import Prompt

NODE_TYPES = ("asset", "equipment_class", "failure_mode", "sensor", "entity")
_ENTITY_LIKE = frozenset({"entity", "sensor", "failure_mode"})
# edge type -> (allowed source node types, allowed target node types, needs an asset context)
EDGE_TYPES: dict[str, tuple[frozenset[str], frozenset[str], bool]] = {
    "experiences": (frozenset({"asset", "equipment_class"}), frozenset({"failure_mode"}), False),
    "monitored_by": (frozenset({"asset", "equipment_class"}), frozenset({"sensor"}), False),
    "relevant_to": (frozenset({"sensor"}), frozenset({"failure_mode"}), True),
    # from key-entity extraction (KD_Extend): what a class's documents talk about, and which of
    # those things are talked about together
    "related_to": (frozenset({"asset", "equipment_class"}), _ENTITY_LIKE, False),
    "co_occurs_with": (_ENTITY_LIKE, _ENTITY_LIKE, True),
}
SOURCES = ("table", "llm")

NODE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # "<type>:<name>", e.g. "sensor:vibration"
        ("type", pa.string()),
        ("name", pa.string()),
        ("source", pa.string()),  # "table" | "llm"
        ("origin", pa.string()),  # the file or prompt it came from
        ("attrs", pa.string()),  # JSON object of stage-specific attributes
    ]
)
EDGE_SCHEMA = pa.schema(
    [
        ("src", pa.string()),
        ("dst", pa.string()),
        ("type", pa.string()),
        ("asset", pa.string()),  # context node id for relevant_to, else ""
        ("source", pa.string()),
        ("origin", pa.string()),
        ("attrs", pa.string()),
    ]
)


class KnowledgeGraphError(ValueError):
    """A node or edge that breaks the graph's schema."""


def node_id(node_type: str, name: str) -> str:
    return f"{node_type}:{name}"


class KnowledgeGraph:
    """A typed MultiDiGraph with provenance. Adding an existing node or edge is a no-op."""

    def __init__(self) -> None:
        self.graph = nx.MultiDiGraph()

    # --- building ---------------------------------------------------------------------------

    def add_node(self, node_type: str, name: str, source: str, origin: str = "", **attrs: Any) -> str:
        """Add a node (or keep the existing one, whose provenance stays the first) and return its id."""
        if node_type not in NODE_TYPES:
            raise KnowledgeGraphError(f"unknown node type {node_type!r}: expected one of {NODE_TYPES}")
        _check_source(source)
        if not name or not name.strip():
            raise KnowledgeGraphError(f"empty {node_type} name (origin {origin!r})")
        nid = node_id(node_type, name)
        if nid not in self.graph:
            self.graph.add_node(nid, type=node_type, name=name, source=source, origin=origin, attrs=attrs)
        return nid

    def add_edge(
        self, src: str, dst: str, edge_type: str, source: str, origin: str = "", asset: str = "", **attrs: Any
    ) -> bool:
        """Add a typed edge between existing nodes; return False when it was already there."""
        if edge_type not in EDGE_TYPES:
            raise KnowledgeGraphError(f"unknown edge type {edge_type!r}: expected one of {tuple(EDGE_TYPES)}")
        _check_source(source)
        src_types, dst_types, needs_asset = EDGE_TYPES[edge_type]
        for nid, allowed, end in ((src, src_types, "source"), (dst, dst_types, "target")):
            if nid not in self.graph:
                raise KnowledgeGraphError(
                    f"{edge_type} edge {src} -> {dst}: {end} node {nid!r} does not exist"
                )
            if self.graph.nodes[nid]["type"] not in allowed:
                raise KnowledgeGraphError(
                    f"{edge_type} edge {src} -> {dst}: {end} must be one of {sorted(allowed)}, "
                    f"not {self.graph.nodes[nid]['type']}"
                )
        if needs_asset and asset not in self.graph:
            raise KnowledgeGraphError(
                f"{edge_type} edge {src} -> {dst} needs an existing asset context, got {asset!r}"
            )
        key = f"{edge_type}|{asset}"
        if self.graph.has_edge(src, dst, key):
            return False
        self.graph.add_edge(
            src, dst, key=key, type=edge_type, asset=asset, source=source, origin=origin, attrs=attrs
        )
        return True

    # --- reading ----------------------------------------------------------------------------

    def __contains__(self, nid: str) -> bool:
        return nid in self.graph

    def nodes_of(self, node_type: str) -> list[str]:
        return sorted(n for n, d in self.graph.nodes(data=True) if d["type"] == node_type)

    def names_of(self, node_type: str) -> set[str]:
        """The names (as the tables spell them, not node ids) of every node of one type."""
        return {self.graph.nodes[n]["name"] for n in self.nodes_of(node_type)}

    def edges_from(self, nid: str) -> list[tuple[str, dict[str, Any]]]:
        """(target, edge data) of each of `nid`'s outgoing edges, by edge type and target."""
        edges = [(dst, data) for _, dst, data in self.graph.out_edges(nid, data=True)]
        return sorted(edges, key=lambda e: (e[1]["type"], e[0]))

    def neighbours(self, nid: str, edge_type: str, asset: str | None = None) -> list[str]:
        """Targets of `nid`'s outgoing edges of one type (in one asset's context, if given)."""
        return sorted(
            {
                dst
                for _, dst, d in self.graph.out_edges(nid, data=True)
                if d["type"] == edge_type and (asset is None or d["asset"] == asset)
            }
        )

    def counts(self) -> dict[str, dict[str, int]]:
        nodes = Counter(d["type"] for _, d in self.graph.nodes(data=True))
        edges = Counter(d["type"] for _, _, d in self.graph.edges(data=True))
        by_source = Counter(d["source"] for _, _, d in self.graph.edges(data=True))
        by_origin = Counter(d["origin"] for _, _, d in self.graph.edges(data=True))
        return {
            "nodes": {t: nodes.get(t, 0) for t in NODE_TYPES} | {"total": self.graph.number_of_nodes()},
            "edges": {t: edges.get(t, 0) for t in EDGE_TYPES} | {"total": self.graph.number_of_edges()},
            "edges_by_source": {s: by_source.get(s, 0) for s in SOURCES},
            # the file or prompt each edge came from: what every table and teacher stage added
            "edges_by_origin": dict(sorted(by_origin.items())),
        }

    # --- files ------------------------------------------------------------------------------

    def nodes_frame(self) -> pd.DataFrame:
        rows = [
            {**{k: d[k] for k in ("type", "name", "source", "origin")}, "id": n, "attrs": _dump(d["attrs"])}
            for n, d in self.graph.nodes(data=True)
        ]
        return pd.DataFrame(rows, columns=NODE_SCHEMA.names).sort_values("id", ignore_index=True)

    def edges_frame(self) -> pd.DataFrame:
        rows = [
            {
                **{k: d[k] for k in ("type", "asset", "source", "origin")},
                "src": u,
                "dst": v,
                "attrs": _dump(d["attrs"]),
            }
            for u, v, d in self.graph.edges(data=True)
        ]
        return pd.DataFrame(rows, columns=EDGE_SCHEMA.names).sort_values(
            ["type", "src", "dst", "asset"], ignore_index=True
        )

    def write(self, out_dir: str | Path, graphml: bool = True) -> None:
        """nodes.parquet and edges.parquet (the data), graph.graphml (for viewing in Gephi or yEd)."""
        out_dir = Path(out_dir)
        write_parquet(
            pa.Table.from_pandas(self.nodes_frame(), schema=NODE_SCHEMA, preserve_index=False),
            out_dir / "nodes.parquet",
        )
        write_parquet(
            pa.Table.from_pandas(self.edges_frame(), schema=EDGE_SCHEMA, preserve_index=False),
            out_dir / "edges.parquet",
        )
        if graphml:
            # GraphML holds flat string attributes only: attrs stays a JSON string.
            flat = nx.MultiDiGraph()
            flat.add_nodes_from(
                (n, {**d, "attrs": _dump(d["attrs"])}) for n, d in self.graph.nodes(data=True)
            )
            flat.add_edges_from(
                (u, v, k, {**d, "attrs": _dump(d["attrs"])})
                for u, v, k, d in self.graph.edges(keys=True, data=True)
            )
            with replacing(out_dir / "graph.graphml") as partial:
                nx.write_graphml(flat, partial)

    @classmethod
    def read(cls, kg_dir: str | Path) -> KnowledgeGraph:
        """Load nodes.parquet and edges.parquet, re-checking every node and edge against the schema."""
        kg_dir = Path(kg_dir)
        kg = cls()
        for r in read_arrow(kg_dir / "nodes.parquet").to_pylist():
            kg.add_node(r["type"], r["name"], r["source"], r["origin"], **json.loads(r["attrs"]))
        for r in read_arrow(kg_dir / "edges.parquet").to_pylist():
            kg.add_edge(
                r["src"], r["dst"], r["type"], r["source"], r["origin"], r["asset"], **json.loads(r["attrs"])
            )
        return kg


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise KnowledgeGraphError(f"unknown provenance source {source!r}: expected one of {SOURCES}")


def _dump(attrs: dict[str, Any]) -> str:
    return json.dumps(attrs, sort_keys=True, ensure_ascii=False)


def from_tables(tables: SourceTables, include_eval_assets: bool = True) -> KnowledgeGraph:
    """The table-sourced graph: D_source classes and their failure modes, and (optionally) the
    D_eval assets with their failure modes, sensors and the ISO 17359 relevance ticks.

    Compound cells ("oil leakage / oil consumption") link to each of their canonical names.
    """
    vocab = tables["vocabulary"]
    names_of = vocab.groupby(["kind", "label"])["name"].agg(lambda s: list(dict.fromkeys(s))).to_dict()
    kg = KnowledgeGraph()

    def link(owner: str, kind: str, label: str, origin: str) -> list[str]:
        edge_type = "experiences" if kind == "failure_mode" else "monitored_by"
        ids = [kg.add_node(kind, name, "table", origin) for name in names_of[(kind, label)]]
        for nid in ids:
            kg.add_edge(owner, nid, edge_type, "table", origin)
        return ids

    for name in tables["equipment_classes"]["equipment_class"]:
        kg.add_node("equipment_class", name, "table", EQUIPMENT_CLASSES_FILE, dataset="D_source")
    for row in tables["class_failure_modes"].itertuples():
        link(
            node_id("equipment_class", row.equipment_class),
            "failure_mode",
            row.failure_mode,
            ASSET_FACTS_FILE,
        )

    if include_eval_assets:
        for name in tables["eval_assets"]["asset"]:
            kg.add_node("asset", name, "table", EVAL_ASSETS_FILE, dataset="D_eval")
        for row in tables["eval_asset_candidates"].itertuples():
            link(node_id("asset", row.asset), row.kind, row.name, ASSET_FACTS_FILE)
        for row in tables["fm_sensor_matrix"].itertuples():
            asset = node_id("asset", row.asset)
            fms = link(asset, "failure_mode", row.failure_mode, MATRIX_FILE)
            sensors = link(asset, "sensor", row.sensor, MATRIX_FILE)
            if row.relevant:
                for sensor in sensors:
                    for fm in fms:
                        kg.add_edge(sensor, fm, "relevant_to", "table", MATRIX_FILE, asset=asset)
    return kg


# --- the facts of the teacher stages --------------------------------------------------------------


def add_discovered_sensors(kg: KnowledgeGraph, sensors: pd.DataFrame, prompt: Prompt) -> int:
    """Add the discovered sensors and their `monitored_by` edges; return how many edges were new."""
    added = 0
    for row in sensors.itertuples():
        sensor = kg.add_node("sensor", row.sensor, "llm", prompt.name, prompt_hash=prompt.hash)
        cls = node_id("equipment_class", row.equipment_class)
        added += kg.add_edge(cls, sensor, "monitored_by", "llm", prompt.name, cache_key=row.cache_key)
    return added


def add_relevance(kg: KnowledgeGraph, relevance: pd.DataFrame, prompt: Prompt) -> int:
    """A `relevant_to` edge (sensor -> failure mode, in the class's context) for each yes."""
    added = 0
    for row in relevance[relevance["relevant"].fillna(False)].itertuples():
        cls = node_id("equipment_class", row.equipment_class)
        sensor = node_id("sensor", row.sensor)
        for name in row.failure_mode.split(LABEL_SEPARATOR):
            added += kg.add_edge(
                sensor,
                node_id("failure_mode", name),
                "relevant_to",
                "llm",
                prompt.name,
                asset=cls,
                reason=row.reason,
                cache_key=row.cache_key,
            )
    return added


def add_key_entities(kg: KnowledgeGraph, entities: pd.DataFrame, prompt: Prompt) -> int:
    """KD_Extend's links: class --related_to--> each key entity, and co_occurs_with between the
    entities of one document (in the class's context). Returns the number of new edges."""
    added = 0
    for (source, cls_name), doc in entities.groupby(["source_doc_id", "equipment_class"], sort=False):
        cls = node_id("equipment_class", cls_name)
        ids = [kg.add_node(r.kind, r.entity, "llm", prompt.name) for r in doc.itertuples()]
        for nid, key in zip(ids, doc["cache_key"], strict=True):
            added += kg.add_edge(
                cls, nid, "related_to", "llm", prompt.name, source_doc_id=source, cache_key=key
            )
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                added += kg.add_edge(
                    a, b, "co_occurs_with", "llm", prompt.name, asset=cls, source_doc_id=source
                )
    return added


def build(
    tables: SourceTables,
    sensors: pd.DataFrame,
    relevance: pd.DataFrame,
    key_entities: pd.DataFrame | None,
    prompts: dict[str, Prompt],
    include_eval_assets: bool = True,
) -> KnowledgeGraph:
    """The one knowledge graph: the tables' graph, then the sensors sensor_discovery found, the
    relevance_check yes answers and kd_extend's key entities (None: not yet extracted), each with its
    prompt (`prompts` by name: sensor_discovery, relevance_check, key_entities) as provenance."""
    kg = from_tables(tables, include_eval_assets)
    add_discovered_sensors(kg, sensors, prompts["sensor_discovery"])
    add_relevance(kg, relevance, prompts["relevance_check"])
    if key_entities is not None:
        add_key_entities(kg, key_entities, prompts["key_entities"])
    return kg
