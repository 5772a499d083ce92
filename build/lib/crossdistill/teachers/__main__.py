"""``python -m crossdistill.teachers``: teacher_scores.py's command line (:mod:`crossdistill.teachers.cli`)."""

from crossdistill.teachers.cli import run

run()
