#!/usr/bin/env python3
"""Cron wrapper for ``scalekit tickets2db`` (same options), runnable from a checkout."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scalekit.cli import main

if __name__ == "__main__":
    sys.exit(main(["tickets2db", *sys.argv[1:]]))
