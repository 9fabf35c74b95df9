"""``python -m refproxier``: the same as the ``refproxier`` console script."""

import sys

from refproxier.cli import main

sys.exit(main())
