"""`python -m gate gate --profile latency_first --slo personal --duration 60` (same as `gptoss gate`)."""

import sys

from gate.cli import main

sys.exit(main())
