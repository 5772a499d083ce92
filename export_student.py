#!/usr/bin/env python
"""export_student.py: ``python -m crossdistill.models`` (``crossdistill-export``); the command line is :mod:`crossdistill.models.cli`."""
from crossdistill.models.cli import main, parse_args, run  # noqa: F401

if __name__ == "__main__":
    run()
