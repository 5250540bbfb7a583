"""The Molecule driver: Molecule's side of the contract, kvmdrive does the work.

``create.yml`` and ``destroy.yml`` (beside this file) call the ``kvmdrive``
binary; this class tells Molecule how to reach the instances from the
``instance_config.yml`` that ``create.yml`` writes.
"""

from __future__ import annotations

import os
import subprocess

from pathlib import Path
from typing import TYPE_CHECKING, Any

from molecule import util
from molecule.api import Driver

from molecule_kvmdrive.binary import BIN_ENV, find_binary


if TYPE_CHECKING:
    from molecule.config import Config

#: The driver's name in molecule.yml (Molecule's schema wants ``molecule-*``).
DRIVER_NAME = "molecule-kvmdrive"

#: OpenSSH's default key exchanges without the post-quantum hybrids and with
#: ECDH P-256 first, the cheapest when the guest CPU is emulated (TCG): the
#: same list as ``KEX_ALGORITHMS`` in kvmdrive's src/machine/ssh.rs.
KEX_ALGORITHMS = (
    "ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,"
    "curve25519-sha256,curve25519-sha256@libssh.org,"
    "diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,"
    "diffie-hellman-group18-sha512,diffie-hellman-group14-sha256"
)


#: Mitogen for Ansible's linear strategy (``driver: mitogen: true``).
MITOGEN_STRATEGY = "mitogen_linear"


def select_mitogen(config_data: dict[str, Any]) -> None:
    """For ``mitogen: true`` in the driver section, run the scenario's
    playbooks with Mitogen for Ansible: one Python per machine for all tasks
    instead of one per task (about 3x faster converges under TCG).

    Ansible loads the strategy from the installed ``mitogen`` package's
    directory: the scenario's Ansible environment (Molecule 26's
    ``ansible.env``, earlier releases' ``provisioner.env``) gets
    ``ANSIBLE_STRATEGY_PLUGINS`` and ``ANSIBLE_STRATEGY``, which every
    playbook Molecule runs for the scenario (the verifier's too) inherits.
    A strategy the user chose (in the environment, that ``env`` or the
    ansible.cfg options) wins. Idempotent.
    """
    if not (config_data.get("driver") or {}).get("mitogen"):
        return
    if isinstance(config_data.get("ansible"), dict):
        section = config_data["ansible"]
        cfg = section.get("cfg") or {}
    else:
        section = config_data.setdefault("provisioner", {})
        cfg = section.get("config_options") or {}
    if not isinstance(section.get("env"), dict):
        section["env"] = {}
    env = section["env"]
    defaults = cfg.get("defaults") or {}
    if "ANSIBLE_STRATEGY" in os.environ or "ANSIBLE_STRATEGY" in env or "strategy" in defaults:
        return
    try:
        import ansible_mitogen.plugins.strategy as strategies  # noqa: PLC0415
    except ImportError as e:
        util.sysexit_with_message(
            f"driver option `mitogen: true`, but this Python cannot import Mitogen for Ansible "
            f"({e}): `pip install molecule-kvmdrive[mitogen]` (or `pip install mitogen`) here, "
            f"or drop the option",
        )
    dirs = [os.path.dirname(strategies.__file__)]
    for more in (
        env.get("ANSIBLE_STRATEGY_PLUGINS"),
        os.environ.get("ANSIBLE_STRATEGY_PLUGINS"),
        defaults.get("strategy_plugins"),
    ):
        if more:
            dirs.extend(str(more).split(os.pathsep))
    env["ANSIBLE_STRATEGY_PLUGINS"] = os.pathsep.join(dict.fromkeys(dirs))
    env["ANSIBLE_STRATEGY"] = MITOGEN_STRATEGY


class KvmDrive(Driver):
    """libvirt machines from Vagrant boxes, made by the kvmdrive binary.

    ```yaml
    driver:
      name: molecule-kvmdrive
    platforms:
      - name: instance
        box: kvmdrive/debian-12
        memory: 512
    ```
    """

    title = "libvirt/KVM machines from Vagrant boxes, made by kvmdrive"

    def __init__(self, config: Config | None = None) -> None:
        """Construct the driver (Molecule also does so without a config)."""
        super().__init__(config)  # type: ignore[arg-type]
        self._name = DRIVER_NAME

    @property
    def name(self) -> str:
        """Name of the driver.

        Molecule asks for it (``MOLECULE_DRIVER_NAME``) while it builds each
        playbook's environment, just before it reads the scenario's own
        ``env``: :func:`select_mitogen` adds Mitogen's variables to that
        ``env`` then, on the configuration as it is at that moment (Molecule
        reads molecule.yml again after making the driver, and ``--all``
        makes every scenario's configuration before running any).
        """
        config = getattr(self, "_config", None)
        if config is not None:
            select_mitogen(config.config_data)
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    @property
    def login_cmd_template(self) -> str:
        """`molecule login`'s command, filled in from :meth:`login_options`."""
        options = " ".join(self.ssh_connection_options)
        return f"ssh {{address}} -l {{user}} -p {{port}} -i {{identity_file}} {options}"

    @property
    def default_ssh_connection_options(self) -> list[str]:
        """SSH options: a fresh guest has a new host key every time; no
        post-quantum key exchange (see :data:`KEX_ALGORITHMS`)."""
        return [*self._get_ssh_connection_options(), f"-o KexAlgorithms={KEX_ALGORITHMS}"]

    @property
    def default_safe_files(self) -> list[str]:
        """Nothing of ours needs to survive `molecule destroy`."""
        return []

    def login_options(self, instance_name: str) -> dict[str, str]:
        """Address, user, port and key of an instance, for the login command."""
        return util.merge_dicts({"instance": instance_name}, self._instance(instance_name) or {})

    def ansible_connection_options(self, instance_name: str) -> dict[str, Any]:
        """Inventory variables of an instance ({} until it is created)."""
        conf = self._instance(instance_name)
        if not conf:
            return {}
        options = {
            "ansible_connection": "ssh",
            "ansible_host": conf["address"],
            "ansible_port": conf["port"],
            "ansible_user": conf["user"],
            "ansible_private_key_file": conf["identity_file"],
            "ansible_ssh_common_args": " ".join(self.ssh_connection_options),
            # One SSH round trip per task instead of three or four (no temp
            # file put + chmod + run + rm): what makes a converge under TCG
            # fast. Boxes' sudo does not require a tty, so become still works.
            "ansible_pipelining": True,
        }
        if conf.get("ssh_args"):
            # Remote libvirt / several hosts: through the instance's host.
            options["ansible_ssh_common_args"] += " " + conf["ssh_args"]
        if conf.get("python"):
            # The guest's /usr/bin/python3, found by kvmdrive at `up`: no
            # interpreter discovery (two SSH commands per host and playbook).
            options["ansible_python_interpreter"] = conf["python"]
        if conf.get("networks"):
            # Extra NICs (private/public networks): [{name, mac, ip, prefix}].
            options["kvmdrive_networks"] = conf["networks"]
        return options

    def sanity_checks(self) -> None:
        """Find the kvmdrive binary (cheap: Molecule runs this before every playbook)."""
        if find_binary() is None:
            where = os.environ.get(BIN_ENV)
            msg = (
                f"{BIN_ENV}={where} is not an executable file"
                if where
                else "kvmdrive was not found beside this Python or on PATH"
            )
            util.sysexit_with_message(
                f"{msg}: reinstall the plugin from its wheel (`pip install molecule-kvmdrive`, "
                f"which carries the binary), install kvmdrive (`cargo install --locked --path .` "
                f"in its repository), or set {BIN_ENV} to the binary",
            )

    def reset(self) -> None:
        """`molecule reset`: remove every parked machine (kept by `reuse: true`) for good."""
        binary = find_binary()
        if binary is None:
            return
        done = subprocess.run([binary, "gc", "--all"], check=False)  # noqa: S603
        if done.returncode != 0:
            util.sysexit_with_message(f"`{binary} gc --all` failed (status {done.returncode})")

    def schema_file(self) -> str:
        """JSON schema of the driver and platform keys."""
        return str(Path(__file__).with_name("driver.json"))

    @property
    def required_collections(self) -> dict[str, str]:
        """None: the playbooks use ansible.builtin only, so nothing is fetched."""
        return {}

    def _instance(self, instance_name: str) -> dict[str, Any] | None:
        """The instance's entry in instance_config.yml, or None."""
        try:
            entries = util.safe_load_file(self.instance_config)
        except OSError:
            return None
        for entry in entries or []:
            if isinstance(entry, dict) and entry.get("instance") == instance_name:
                return entry
        return None
