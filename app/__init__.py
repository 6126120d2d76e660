"""The kernel of the iHaNoi backend: settings, database, Redis, errors, logs, metrics, CLI."""
