"""``python -m pgqueue.cli``: the same as the ``pgqueue`` command."""

from pgqueue.cli import main

raise SystemExit(main())
