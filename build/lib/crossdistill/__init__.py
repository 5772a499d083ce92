"""crossdistill: distil a cross-encoder teacher into a bi-encoder student for retrieval.

The scripts at the repository's root (``prepare_data.py``, ``train_teacher_model.py``, ...) are thin front ends over
this package. Its sub-packages are the stages, and imports run one way (``tests/test_architecture.py`` keeps it so)::

    core, losses  <-  models  <-  data  <-  evaluate  <-  teach  <-  distill  <-  monitor  <-  the scripts

- :mod:`crossdistill.core`      settings (typed configs that generate the parsers), errors, files, ownership, run
                                folders, events, checkpoints, the training engine, hooks and fault injection
- :mod:`crossdistill.losses`    the loss functions, one a file with its formula and reference (pure tensor functions)
- :mod:`crossdistill.models`    model resolution and aliases, the student, the teacher (which folders are teachers),
                                ONNX/int8 export, the model card
- :mod:`crossdistill.data`      sources (BEIR, SQuAD/KorQuAD, your own tables, scored sources), prepared versions,
                                mining, prepare_data.py, per-query candidate lists, teacher-score files
- :mod:`crossdistill.evaluate`  metrics (ranx), search and BM25, teacher reranking, the report and its figures
- :mod:`crossdistill.teach`     the teacher stage, and teacher scores (several teachers, computed once, exported)
- :mod:`crossdistill.distill`   the student stage: its config, inputs, soft labels (fusion), guard, step, publishing
- :mod:`crossdistill.monitor`   the supervisor, process control, the event watch, status, commands, presets
"""

__version__ = "0.1.0"
