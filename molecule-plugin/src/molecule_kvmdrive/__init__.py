"""molecule-kvmdrive: a Molecule driver for kvmdrive (libvirt machines from Vagrant boxes)."""

from __future__ import annotations

from typing import Any


__all__ = ["KvmDrive"]


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m molecule_kvmdrive.binary` (the playbooks' binary
    # lookup) does not import Molecule.
    if name == "KvmDrive":
        from molecule_kvmdrive.driver import KvmDrive  # noqa: PLC0415

        return KvmDrive
    raise AttributeError(name)
