"""The machinery every stage shares: settings (flags from typed configs), user-facing errors, files and run folders,
events, checkpoints, the training engine, hooks and fault injection. Imports nothing else of the package."""
