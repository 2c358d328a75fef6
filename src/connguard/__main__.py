"""``python -m connguard``: the same as the ``connguard`` command."""

import sys

from .cli import main

sys.exit(main())
