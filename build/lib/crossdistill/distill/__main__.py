"""``python -m crossdistill.distill``: train_distillation_pipeline.py's command line (:mod:`crossdistill.distill.cli`)."""

from crossdistill.distill.cli import run

run()
