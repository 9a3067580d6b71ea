"""Worker entry points: one importable app per system, configured from the environment.

Worker CLIs import an app by dotted path in a fresh process, so each app reads where its store
is from `BENCH_*` variables that the harness sets when it starts the process.
"""
