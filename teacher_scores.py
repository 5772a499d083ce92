#!/usr/bin/env python
"""teacher_scores.py: ``python -m crossdistill.teachers`` (``crossdistill-teacher-scores``); the command line is :mod:`crossdistill.teachers.cli`."""
from crossdistill.teachers.cli import main, parse_args, run  # noqa: F401

if __name__ == "__main__":
    run()
