"""Where the kvmdrive binary is: one answer for the driver and its playbooks.

The wheel (maturin, ``bindings = "bin"``) installs ``kvmdrive`` into the
environment's scripts directory beside the Python package, so ``pip install
molecule-kvmdrive`` is the only install a Molecule user needs. The order:

1. ``$KVMDRIVE_BIN`` when set (an explicit override; must be executable),
2. the binary installed with this package (``sysconfig.get_path("scripts")``,
   then the directory of ``sys.executable``),
3. ``kvmdrive`` on ``PATH`` (e.g. from ``cargo install``).

``python -m molecule_kvmdrive.binary`` prints the answer (the playbooks ask it
this way), or exits 1 when there is none. Imports nothing of Molecule.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig

from pathlib import Path


#: Environment variable naming the kvmdrive binary explicitly.
BIN_ENV = "KVMDRIVE_BIN"
#: The binary's file name.
BIN_NAME = "kvmdrive"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def installed_binary() -> str | None:
    """The kvmdrive installed with this package (the environment's scripts dir), or None."""
    dirs = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    for d in dict.fromkeys(d for d in dirs if d):
        candidate = Path(d) / BIN_NAME
        if _executable(candidate):
            return str(candidate)
    return None


def find_binary() -> str | None:
    """``$KVMDRIVE_BIN`` if set (None if not executable), else the package's own, else PATH."""
    explicit = os.environ.get(BIN_ENV)
    if explicit:
        path = Path(explicit)
        return str(path) if _executable(path) else None
    return installed_binary() or shutil.which(BIN_NAME)


def main() -> int:
    """Print the binary's path; exit 1 when there is none."""
    found = find_binary()
    if found is None:
        return 1
    print(found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
