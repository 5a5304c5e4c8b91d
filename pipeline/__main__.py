"""`python -m pipeline` is `tfx-e2e`."""

import sys

from pipeline.cli import main

sys.exit(main())
