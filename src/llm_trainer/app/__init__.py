"""The application layer, split by responsibility (the ``Service`` façade composes them):

- ``queries``  run views, reconciled with process liveness (read only);
- ``planner``  train / continue / resume requests -> a ``LaunchPlan`` (no side effects);
- ``control``  start a plan (lock, run record, worker process), stop, follow;
- ``admin``    model lookups, checkpoints, model views, rename / archive / delete / export;
- ``datasets`` the built-in datasets and the dataset files of a folder (for pickers).

Front ends (CLI, TUI) call the façade and get typed views (``llm_trainer.views``). No torch
at import time.
"""
