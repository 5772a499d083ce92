#!/usr/bin/env python
"""train_distillation_pipeline.py: ``python -m crossdistill.distill`` (``crossdistill-distill``); the command line is :mod:`crossdistill.distill.cli`."""
from crossdistill.distill.cli import main, parse_args, run  # noqa: F401

if __name__ == "__main__":
    run()
