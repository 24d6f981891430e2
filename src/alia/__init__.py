"""alia: industrial-asset tables -> knowledge graph -> synthetic corpora -> student LLM and embedder."""

__version__ = "0.1.0"
