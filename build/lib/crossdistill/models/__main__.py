"""``python -m crossdistill.models``: export_student.py's command line (:mod:`crossdistill.models.cli`)."""

from crossdistill.models.cli import run

run()
