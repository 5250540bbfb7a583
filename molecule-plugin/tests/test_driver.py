"""Unit tests of the molecule-kvmdrive driver (no VM, no libvirt)."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import sys

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from jsonschema import Draft7Validator
from molecule import util
from molecule.api import drivers
from molecule.constants import DEFAULT_CONFIG
from molecule.model import schema_v3

from molecule_kvmdrive.driver import BIN_ENV, DRIVER_NAME, KEX_ALGORITHMS, KvmDrive, select_mitogen


REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads(
    (REPO / "molecule-plugin/src/molecule_kvmdrive/driver.json").read_text(encoding="utf-8")
)

#: molecule-vagrant's documented platform example (libvirt provider), driver renamed.
VAGRANT_SCENARIO = """
driver:
  name: molecule-kvmdrive
  provider:
    name: libvirt
platforms:
  - name: instance-1
    hostname: web1
    instance_raw_config_args:
      - "vm.network 'forwarded_port', guest: 80, host: 8080"
    interfaces:
      - auto_config: true
        network_name: private_network
        type: dhcp
    config_options:
      synced_folder: false
    box: debian/bookworm64
    box_version: "12.1"
    box_url: http://repo.example.com/debian.json
    box_architecture: amd64
    box_download_checksum: 6d016aa287990152548f0a414048c2edeea7f84b48293cab21506f86649f79b8
    box_download_checksum_type: sha256
    memory: 1024
    cpus: 2
    provider_options:
      cpu_mode: host-passthrough
      nested: true
    provider_raw_config_args:
      - "cpuset = '1-4,^3,6'"
    groups: [web]
    children: [frontend]
"""


def molecule_config(data: dict[str, Any]) -> dict[str, Any]:
    """A config as Molecule validates it: its defaults with the scenario merged in."""
    return util.merge_dicts(copy.deepcopy(dict(DEFAULT_CONFIG)), data)


def make_driver(tmp_path: Path, ssh_options: list[str] | None = None) -> KvmDrive:
    """A driver whose scenario's ephemeral directory is tmp_path."""
    config = SimpleNamespace(
        scenario=SimpleNamespace(ephemeral_directory=str(tmp_path)),
        config_data={"driver": {"ssh_connection_options": ssh_options or [], "safe_files": []}},
    )
    return KvmDrive(config)  # type: ignore[arg-type]


INSTANCES = [
    {
        "instance": "web",
        "address": "192.168.121.10",
        "user": "vagrant",
        "port": 22,
        "identity_file": "/eph/kvmdrive/machines/web/id_ed25519",
    },
]


def test_a_molecule_vagrant_scenario_passes_molecules_validation() -> None:
    data = molecule_config(yaml.safe_load(VAGRANT_SCENARIO))
    assert schema_v3.validate(data) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [("image", "debian:12"), ("privileged", True), ("memroy", 512), ("dockerfile", "x")],
)
def test_unknown_platform_keys_are_refused(key: str, value: object) -> None:
    data = molecule_config({"driver": {"name": DRIVER_NAME}, "platforms": [{"name": "a", key: value}]})
    errors = schema_v3.validate(data)
    assert errors, f"{key} was accepted"
    assert key in errors[0]


def test_bad_values_are_refused() -> None:
    v = Draft7Validator(SCHEMA)
    for platform in [{"box": "x"}, {"name": "a", "accel": "fast"}, {"name": "a", "groups": "web"}]:
        doc = {"driver": {"name": DRIVER_NAME}, "platforms": [platform]}
        assert list(v.iter_errors(doc)), platform


def test_the_generated_schema_validates_a_sample_platform() -> None:
    """driver.json is generated from the binary's platform type (src/project/schema.rs;
    a Rust test fails when the checked-in file is stale): the plugin validates with it."""
    assert "Generated from kvmdrive" in SCHEMA["description"]
    sample = yaml.safe_load(VAGRANT_SCENARIO)
    platform = dict(sample["platforms"][0], disk_size="20G", accel="tcg", machine_type="q35", tpm=True)
    doc = {"driver": {"name": DRIVER_NAME}, "platforms": [platform]}
    assert list(Draft7Validator(SCHEMA).iter_errors(doc)) == []
    assert schema_v3.validate(molecule_config(doc)) == []


def test_the_entry_point_registers_the_driver() -> None:
    found = drivers()
    assert DRIVER_NAME in found
    assert isinstance(found[DRIVER_NAME], KvmDrive)


def test_contract_basics(tmp_path: Path) -> None:
    d = make_driver(tmp_path)
    assert d.name == DRIVER_NAME
    d.name = "other"
    assert d.name == "other"
    assert d.required_collections == {}
    assert Path(d.schema_file()).is_file()
    assert d.default_safe_files == []
    assert d.modules_dir() is None, "Molecule 26 ignores bundled modules: ship none"
    for step in ("create", "destroy"):
        playbook = d.get_playbook(step)
        assert playbook is not None
        text = Path(playbook).read_text(encoding="utf-8")
        assert "ansible.builtin.command" in text
        assert isinstance(yaml.safe_load(text), list), f"{step}.yml is a playbook"


def test_connection_options_come_from_instance_config(tmp_path: Path) -> None:
    d = make_driver(tmp_path)
    assert d.ansible_connection_options("web") == {}, "not created yet"
    (tmp_path / "instance_config.yml").write_text(yaml.safe_dump(INSTANCES), encoding="utf-8")
    opts = d.ansible_connection_options("web")
    assert opts["ansible_host"] == "192.168.121.10"
    assert opts["ansible_port"] == 22
    assert opts["ansible_user"] == "vagrant"
    assert opts["ansible_private_key_file"] == INSTANCES[0]["identity_file"]
    assert opts["ansible_connection"] == "ssh"
    assert "StrictHostKeyChecking=no" in opts["ansible_ssh_common_args"]
    assert f"-o KexAlgorithms={KEX_ALGORITHMS}" in opts["ansible_ssh_common_args"]
    assert opts["ansible_pipelining"] is True
    assert d.ansible_connection_options("db") == {}
    (tmp_path / "instance_config.yml").write_text("[]\n", encoding="utf-8")
    assert d.ansible_connection_options("web") == {}, "emptied by destroy"


def test_extra_networks_become_a_host_var(tmp_path: Path) -> None:
    d = make_driver(tmp_path)
    nets = [{"name": "backend", "mac": "52:54:00:00:00:02", "ip": "192.168.56.11", "prefix": 24}]
    instances = [dict(INSTANCES[0], networks=nets)]
    (tmp_path / "instance_config.yml").write_text(yaml.safe_dump(instances), encoding="utf-8")
    opts = d.ansible_connection_options("web")
    assert opts["kvmdrive_networks"] == nets
    assert opts["ansible_host"] == "192.168.121.10", "ansible_host stays the management address"
    (tmp_path / "instance_config.yml").write_text(yaml.safe_dump(INSTANCES), encoding="utf-8")
    assert "kvmdrive_networks" not in d.ansible_connection_options("web")


def test_the_guests_python_is_set_without_discovery(tmp_path: Path) -> None:
    d = make_driver(tmp_path)
    instances = [dict(INSTANCES[0], python="/usr/bin/python3")]
    (tmp_path / "instance_config.yml").write_text(yaml.safe_dump(instances), encoding="utf-8")
    assert d.ansible_connection_options("web")["ansible_python_interpreter"] == "/usr/bin/python3"
    (tmp_path / "instance_config.yml").write_text(yaml.safe_dump(INSTANCES), encoding="utf-8")
    assert "ansible_python_interpreter" not in d.ansible_connection_options("web"), "unknown: discovery"


def test_login_command(tmp_path: Path) -> None:
    d = make_driver(tmp_path, ssh_options=["-o UserKnownHostsFile=/dev/null", "-o LogLevel=ERROR"])
    (tmp_path / "instance_config.yml").write_text(yaml.safe_dump(INSTANCES), encoding="utf-8")
    options = d.login_options("web")
    assert options["instance"] == "web"
    cmd = shlex.split(d.login_cmd_template.format(**options))
    assert cmd == [
        "ssh",
        "192.168.121.10",
        "-l",
        "vagrant",
        "-p",
        "22",
        "-i",
        INSTANCES[0]["identity_file"],
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]


def test_sanity_checks_find_the_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = make_driver(tmp_path)
    # no kvmdrive installed with the package (the venv may hold one): PATH decides
    monkeypatch.setattr("molecule_kvmdrive.binary.installed_binary", lambda: None)
    fake = tmp_path / "kvmdrive"
    fake.write_text("#!/bin/sh\n", encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv(BIN_ENV, str(fake))
    d.sanity_checks()
    monkeypatch.setenv(BIN_ENV, str(tmp_path / "missing"))
    with pytest.raises(SystemExit):
        d.sanity_checks()
    monkeypatch.delenv(BIN_ENV)
    monkeypatch.setenv("PATH", str(tmp_path))
    d.sanity_checks()
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit):
        d.sanity_checks()


@pytest.mark.parametrize(("option", "not_a_boolean"), [("reuse", "yes"), ("mitogen", "on")])
def test_boolean_driver_options(option: str, not_a_boolean: str) -> None:
    data = molecule_config(
        {"driver": {"name": DRIVER_NAME, option: True}, "platforms": [{"name": "a", "box": "b"}]}
    )
    assert schema_v3.validate(data) == []
    data["driver"][option] = not_a_boolean
    assert schema_v3.validate(data)


def mitogen_config(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Molecule 26's config data (the ``ansible`` section) with ``mitogen: true``."""
    data = {"driver": {"name": DRIVER_NAME, "mitogen": True}, "ansible": {"cfg": {}, "env": {}}}
    return util.merge_dicts(data, extra or {})


def test_mitogen_selects_its_strategy_for_every_playbook(monkeypatch: pytest.MonkeyPatch) -> None:
    import ansible_mitogen.plugins.strategy as strategies

    monkeypatch.delenv("ANSIBLE_STRATEGY", raising=False)
    monkeypatch.setenv("ANSIBLE_STRATEGY_PLUGINS", "/site/strategies")
    data = mitogen_config({"ansible": {"env": {"KEEP": "1"}}})
    select_mitogen(data)
    env = data["ansible"]["env"]
    assert env["ANSIBLE_STRATEGY"] == "mitogen_linear"
    dirs = env["ANSIBLE_STRATEGY_PLUGINS"].split(":")
    assert dirs[0] == str(Path(strategies.__file__).parent)
    assert (Path(dirs[0]) / "mitogen_linear.py").is_file()
    assert dirs[1:] == ["/site/strategies"], "the user's own strategy directories stay"
    assert env["KEEP"] == "1"


@pytest.mark.parametrize("mitogen", [True, False])
def test_molecule_gives_every_playbook_of_the_scenario_mitogens_strategy(
    mitogen: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through Molecule's own Config: it re-reads molecule.yml after making the
    driver, and builds the provisioner's and the verifier's environments from it."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ANSIBLE_STRATEGY", raising=False)
    monkeypatch.chdir(tmp_path)
    scenario = tmp_path / "molecule" / "default"
    scenario.mkdir(parents=True)
    doc = {"driver": {"name": DRIVER_NAME, "mitogen": mitogen}, "platforms": [{"name": "a", "box": "b"}]}
    (scenario / "molecule.yml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    from molecule.config import Config

    config = Config(str(scenario / "molecule.yml"), args={}, command_args={"subcommand": "converge"})
    want = "mitogen_linear" if mitogen else None
    assert config.provisioner.env.get("ANSIBLE_STRATEGY") == want
    assert config.verifier.env.get("ANSIBLE_STRATEGY") == want


def test_mitogen_uses_the_provisioner_env_of_older_molecules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANSIBLE_STRATEGY", raising=False)
    data = {"driver": {"mitogen": True}, "provisioner": {"name": "ansible"}}
    select_mitogen(data)
    assert data["provisioner"]["env"]["ANSIBLE_STRATEGY"] == "mitogen_linear"


@pytest.mark.parametrize(
    "chosen",
    [
        {"ansible": {"env": {"ANSIBLE_STRATEGY": "free"}}},
        {"ansible": {"cfg": {"defaults": {"strategy": "free"}}}},
        {"driver": {"mitogen": False}},
    ],
)
def test_a_strategy_the_user_chose_wins(chosen: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANSIBLE_STRATEGY", raising=False)
    data = mitogen_config(chosen)
    select_mitogen(data)
    assert data["ansible"]["env"].get("ANSIBLE_STRATEGY") in (None, "free")
    assert "ANSIBLE_STRATEGY_PLUGINS" not in data["ansible"]["env"]


def test_mitogen_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANSIBLE_STRATEGY", raising=False)
    monkeypatch.setitem(sys.modules, "ansible_mitogen.plugins.strategy", None)
    with pytest.raises(SystemExit):
        select_mitogen(mitogen_config())


def test_reset_removes_parked_machines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "args"
    fake = tmp_path / "kvmdrive"
    fake.write_text(f'#!/bin/sh\necho "$@" > {log}\n', encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv(BIN_ENV, str(fake))
    KvmDrive(None).reset()
    assert log.read_text(encoding="utf-8").split() == ["gc", "--all"]


def test_instances_behind_a_hypervisor_host_get_its_ssh_args(tmp_path: Path) -> None:
    d = make_driver(tmp_path)
    args = "-o 'ProxyCommand=ssh -W %h:%p root@10.250.2.2' -o ControlPath=/tmp/kvmdrive-ssh-abcdef-%C"
    instances = [dict(INSTANCES[0], ssh_args=args, host="qemu+ssh://root@10.250.2.2/system")]
    (tmp_path / "instance_config.yml").write_text(yaml.safe_dump(instances), encoding="utf-8")
    opts = d.ansible_connection_options("web")
    assert opts["ansible_ssh_common_args"].endswith(" " + args)
    assert "StrictHostKeyChecking=no" in opts["ansible_ssh_common_args"]
    (tmp_path / "instance_config.yml").write_text(yaml.safe_dump(INSTANCES), encoding="utf-8")
    assert "ProxyCommand" not in d.ansible_connection_options("web")["ansible_ssh_common_args"]


def test_kex_list_matches_the_binarys() -> None:
    """The plugin's key exchanges are kvmdrive's (src/machine/ssh.rs), when
    the plugin is tested from the repository."""
    rust = REPO / "src" / "machine" / "ssh.rs"
    if not rust.is_file():
        pytest.skip("not in kvmdrive's repository")
    text = rust.read_text(encoding="utf-8")
    m = re.search(r'pub const KEX_ALGORITHMS: &str = "(.*?)";', text, re.S)
    assert m, "KEX_ALGORITHMS in src/machine/ssh.rs"
    assert m.group(1).replace("\\\n", "") == KEX_ALGORITHMS
    assert "sntrup" not in KEX_ALGORITHMS and "mlkem" not in KEX_ALGORITHMS
