"""Executors: where one attempt of a run executes."""
