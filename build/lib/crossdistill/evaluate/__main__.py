"""``python -m crossdistill.evaluate``: evaluate_final_model.py's command line (:mod:`crossdistill.evaluate.cli`)."""

from crossdistill.evaluate.cli import run

run()
