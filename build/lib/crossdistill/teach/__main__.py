"""``python -m crossdistill.teach``: train_teacher_model.py's command line (:mod:`crossdistill.teach.cli`)."""

from crossdistill.teach.cli import run

run()
