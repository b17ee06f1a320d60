#!/usr/bin/env python3
"""Kiln's command line: ``python run.py [command] ...``; with no command it serves (see README)."""

import sys

from apps.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
