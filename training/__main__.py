"""``python -m training fit|evaluate``: see :mod:`training.cli`."""

from training.cli import main

raise SystemExit(main())
