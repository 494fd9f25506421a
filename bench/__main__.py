"""Entry point: ``python -m bench`` (see ``python -m bench --help``)."""

from __future__ import annotations

import sys

from bench._cli import main

sys.exit(main())
