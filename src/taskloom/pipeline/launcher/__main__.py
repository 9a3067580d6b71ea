"""`python3 <this folder> launch TASK JOB [--force] [--sync]`: run one pipeline job's body here.

What the pod of a `KubeFunctionTask` with a pod template runs (its `{{ argv0 }}`). The app
that builds the pipeline is named by `TASKLOOM_APP` (or `--app`). Run as a folder, so that
nothing but this file lands on `sys.path`.
"""

from taskloom.pipeline.launch import main

if __name__ == "__main__":
    raise SystemExit(main())
