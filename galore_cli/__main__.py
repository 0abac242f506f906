"""``python -m galore_cli``: the ``galore`` command (galore_cli.main)."""
import sys

from galore_cli.main import main

sys.exit(main())
