"""`python -m zoo ...` runs the CLI (what `torchrun -m zoo train ...` starts in each process)."""

from zoo.cli import main

main()
