"""``python -m tinyattn``: the command line of :mod:`tinyattn.cli`."""

import sys

from tinyattn.cli import main

sys.exit(main())
