"""``python -m homewarden`` runs the command line."""

from homewarden.cli import main

main()
