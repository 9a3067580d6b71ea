"""`python -m taskloom` runs the CLI."""

from .cli import main

main()
