"""`python -m ee_search.cli`: how worker processes and tests start the program."""

from ee_search.cli import main

main()
