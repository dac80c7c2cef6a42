"""``python -m scalekit`` runs the command-line interface."""

import sys

from scalekit.cli import main

sys.exit(main())
