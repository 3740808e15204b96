"""The orchestrator: scenarios, backends, runs, metrics and the `bcfl` CLI."""
