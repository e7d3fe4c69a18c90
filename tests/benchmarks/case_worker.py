"""Entry point of one benchmark case process: its JSON spec on stdin (see ``storage_cases``)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from storage_cases import worker_main

if __name__ == "__main__":
    worker_main()
