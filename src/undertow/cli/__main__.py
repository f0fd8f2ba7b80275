"""``python -m undertow.cli``: the same as the ``undertow`` command."""

from undertow.cli import main

main()
