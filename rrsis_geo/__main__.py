"""``python -m rrsis_geo`` runs the ``rrsis`` command line."""

from rrsis_geo.cli.app import main

main()
