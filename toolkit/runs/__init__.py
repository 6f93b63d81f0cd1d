"""Runs: what golden did (bake, nightly and reimage runs) under one id scheme (``ids``), their
records (``record``) and one list of them (``listing``). Depends only on core and state."""

from toolkit.runs.listing import RunSummary, all_runs, bake_run, nightly_run, run_console, show_any

__all__ = ["RunSummary", "all_runs", "bake_run", "nightly_run", "run_console", "show_any"]
