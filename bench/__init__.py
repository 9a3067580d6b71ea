"""taskloom's benchmark harness: every figure is measured against a peer in the same run.

`python -m bench` runs the phases (see `bench/README.md`); numbers are reported as medians over
repetitions that interleave the systems, and as ratios taskloom/peer, never as absolute targets.
"""
