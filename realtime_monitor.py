#!/usr/bin/env python
"""realtime_monitor.py: ``python -m crossdistill.monitor`` (``crossdistill-monitor``); the command line is :mod:`crossdistill.monitor.cli`."""
from crossdistill.monitor.cli import main, parse_args, run  # noqa: F401

if __name__ == "__main__":
    run()
