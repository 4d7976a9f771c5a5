"""``python -m mmbench``: the same as the ``mmbench`` command."""

from mmbench.cli import main

main()
