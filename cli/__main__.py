"""`python -m tfx_e2e.cli` is `tfx-e2e`."""

import sys

from tfx_e2e.cli import main

sys.exit(main())
