#!/usr/bin/env python3
"""Deploy wrapper for ``scalekit zip-static`` (same options), runnable from a checkout."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scalekit.cli import run_command, zip_static

if __name__ == "__main__":
    sys.exit(run_command(zip_static, sys.argv[1:]))
