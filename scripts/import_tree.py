"""Lay out ``build/typecheck/opsbot`` as the installed package looks (``bot/`` as ``opsbot``,
``skills/`` as ``opsbot.skills``): real folders, each ``.py`` file a symlink to its source.

mypy and import-linter find packages by folder name, so they cannot follow the
``package-dir`` mapping of pyproject.toml; this tree lets them check the import names users
get. Rebuilt from scratch on every run (``scripts/test.sh`` calls it), so new files appear.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"
MAPPING = {"opsbot": ROOT / "bot", "opsbot/skills": ROOT / "skills"}


def main() -> int:
    shutil.rmtree(TREE, ignore_errors=True)
    for target, source in MAPPING.items():
        for path in source.rglob("*"):
            if "__pycache__" in path.parts or path.suffix not in (".py", ".typed"):
                continue
            link = TREE / target / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    print(TREE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
