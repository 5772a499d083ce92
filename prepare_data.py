#!/usr/bin/env python
"""prepare_data.py: ``python -m crossdistill.data`` (``crossdistill-prepare``); the command line is :mod:`crossdistill.data.cli`."""
from crossdistill.data.cli import main, parse_args, run  # noqa: F401

if __name__ == "__main__":
    run()
