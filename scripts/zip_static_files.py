#!/usr/bin/env python3
"""Deploy wrapper for ``scalekit zip-static`` (same options), runnable from a checkout."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scalekit.cli import main

if __name__ == "__main__":
    sys.exit(main(["zip-static", *sys.argv[1:]]))
