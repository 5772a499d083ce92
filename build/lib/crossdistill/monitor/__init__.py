"""The monitor: a supervisor that classifies faults and restarts runs, process control, the event watch, the status
line, recovery/evaluation commands and the whole-job presets."""
