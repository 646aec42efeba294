"""On-disk state: runs/, checkpoints/ (models). No torch at import time."""
