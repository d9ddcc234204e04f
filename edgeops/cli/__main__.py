"""`python -m edgeops.cli`, as the tests and benchmarks start the command in a fresh interpreter."""

from edgeops.cli import main

if __name__ == "__main__":
    main()
