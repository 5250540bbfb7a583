"""molecule-kvmdrive: a Molecule driver for kvmdrive (libvirt machines from Vagrant boxes)."""

from molecule_kvmdrive.driver import KvmDrive


__all__ = ["KvmDrive"]
