"""``python -m crossdistill.data``: prepare_data.py's command line (:mod:`crossdistill.data.cli`)."""

from crossdistill.data.cli import run

run()
