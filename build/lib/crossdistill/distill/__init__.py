"""The student stage: soft labels (fused with BM25 / dense scores), the teacher guard, the step, the recipes, the run."""
