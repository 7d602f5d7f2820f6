"""``python -m sample_app``: serve the document store (``--help`` for the options)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
