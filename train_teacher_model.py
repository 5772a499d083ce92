#!/usr/bin/env python
"""train_teacher_model.py: ``python -m crossdistill.teach`` (``crossdistill-teacher``); the command line is :mod:`crossdistill.teach.cli`."""
from crossdistill.teach.cli import main, parse_args, run  # noqa: F401

if __name__ == "__main__":
    run()
