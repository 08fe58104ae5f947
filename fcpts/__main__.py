"""``python -m fcpts ...`` is the ``fcpts`` command."""
import sys

from .cli import main

sys.exit(main())
