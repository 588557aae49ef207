"""``python -m llmb.engine.worker EXPERIMENT_DIR``: one torchrun worker of ``llmb run``."""

import sys

from llmb.engine.runner import worker_main

if __name__ == "__main__":
    sys.exit(worker_main())
