"""``python -m llm_trainer``: the same as the ``llm-trainer`` command."""

import sys

from llm_trainer.cli import main

sys.exit(main())
