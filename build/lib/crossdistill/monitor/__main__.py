"""``python -m crossdistill.monitor``: realtime_monitor.py's command line (:mod:`crossdistill.monitor.cli`)."""

from crossdistill.monitor.cli import run

run()
