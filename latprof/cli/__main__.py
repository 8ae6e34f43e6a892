"""`python -m latprof.cli ...` runs the CLI (tests use it to start sweeps in subprocesses)."""

from latprof.cli import main

main()
