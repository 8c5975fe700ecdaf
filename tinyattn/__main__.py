import sys

from tinyattn.cli import main

sys.exit(main())
