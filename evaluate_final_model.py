#!/usr/bin/env python
"""evaluate_final_model.py: ``python -m crossdistill.evaluate`` (``crossdistill-evaluate``); the command line is :mod:`crossdistill.evaluate.cli`."""
from crossdistill.evaluate.cli import main, parse_args, run  # noqa: F401

if __name__ == "__main__":
    run()
