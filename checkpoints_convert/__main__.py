"""``python -m checkpoints_convert``: see :mod:`checkpoints_convert.cli`."""

import sys

from checkpoints_convert.cli import main

if __name__ == "__main__":
    sys.exit(main())
