"""`python -m exlsp` is the `exlsp` console script.

``python -m`` puts the current directory first on ``sys.path``; an editor starts us with the
workspace as its current directory, and a workspace must never supply code: a planted
``tomllib.py`` would be imported instead of the standard library, a planted
``x.dist-info/entry_points.txt`` would be loaded as a plugin. So it is removed before anything else
is imported. (The console script never has it; ``python -P`` neither.)
"""

import os
import sys

if not sys.flags.safe_path and sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from exlsp.lsp.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
