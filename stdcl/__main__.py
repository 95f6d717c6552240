"""`python -m stdcl` runs the command line."""

from stdcl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
