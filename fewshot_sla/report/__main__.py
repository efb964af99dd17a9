"""``python -m fewshot_sla.report RUN_DIR... [--out DIR]``: the same as ``sla-report``."""

import sys

from .cli import main

sys.exit(main())
