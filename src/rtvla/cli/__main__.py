"""``python -m rtvla.cli``: the same as the ``rtvla`` command."""

from rtvla.cli.main import main

main()
