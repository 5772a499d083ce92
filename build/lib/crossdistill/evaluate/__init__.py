"""Evaluation: ranking metrics (ranx), search over a corpus, BM25 and teacher reranking, the report and its plots."""
