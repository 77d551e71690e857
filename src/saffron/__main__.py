"""``python -m saffron …`` runs the command line (same as the ``saffron`` script)."""

from saffron.cli import main

raise SystemExit(main())
