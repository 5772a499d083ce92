"""The teacher stage: training a cross-encoder, and teacher scores (several teachers combined, computed once, in and
out as FlagEmbedding JSONL)."""
