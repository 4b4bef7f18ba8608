"""`python -m qatune` runs the CLI."""

from qatune.cli import main

main()
