"""``python -m hac_jax.report``: see :mod:`hac_jax.report.cli`."""

import sys

from hac_jax.report.cli import main

sys.exit(main())
