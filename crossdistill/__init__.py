"""crossdistill: distil a cross-encoder teacher into a bi-encoder student for retrieval.

The top-level scripts (``prepare_data.py``, ``train_teacher_model.py``, ...) are thin argparse front
ends over this package; each module owns one concern:

- :mod:`crossdistill.errors`    user-facing errors (one message, exit code 2) and argument checks
- :mod:`crossdistill.fsutil`    atomic writes, output-folder handling, JSONL event log
- :mod:`crossdistill.data`      triplet CSVs, BEIR and SQuAD/KorQuAD sources, splitting
- :mod:`crossdistill.mining`    hard-negative mining (BM25, random, bi-encoder)
- :mod:`crossdistill.models`    model resolution (folders, hub ids, offline aliases), LoRA
- :mod:`crossdistill.teacher`   the cross-encoder teacher: scoring, saving, loading
- :mod:`crossdistill.teacher_training`  the teacher's training loop
- :mod:`crossdistill.metrics`   ranking metrics (ranx) over score lists
"""

__version__ = "0.1.0"
