"""`python -m exlsp` is the `exlsp` console script."""

from exlsp.lsp.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
