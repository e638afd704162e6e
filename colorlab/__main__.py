"""`python -m colorlab ...`: the `colorlab` command, for kernels whose PATH lacks the script (`!python -m colorlab`)."""

import sys

from .cli import main

sys.exit(main())
