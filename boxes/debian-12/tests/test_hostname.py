"""The box's boot-time naming (files/usr/local/libexec/kvmdrive/hostname).

kvmdrive passes the machine's host name as the systemd credential
kvmdrive.hostname; the script names the machine once per name. That what it
writes satisfies kvmdrive's first login is tested on the Rust side
(machine::ssh, the_bundled_box_names_itself_as_the_first_login_expects).
"""

import pathlib
import subprocess

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "files/usr/local/libexec/kvmdrive/hostname"
HOSTS = "127.0.0.1\tlocalhost\n127.0.1.1\tdebian-12\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"


@pytest.fixture
def guest(tmp_path):
    """A stand-in root: kernel name, /etc/hostname, /etc/hosts, no state yet."""
    for path, text in [
        ("proc/sys/kernel/hostname", "debian-12\n"),
        ("etc/hostname", "debian-12\n"),
        ("etc/hosts", HOSTS),
    ]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    (tmp_path / "creds").mkdir()
    return tmp_path


def boot(root, name):
    """One boot with the credential set to `name` (written as systemd does: no newline)."""
    (root / "creds/kvmdrive.hostname").write_text(name)
    out = subprocess.run(
        ["sh", str(SCRIPT)],
        env={"ROOT": str(root), "CREDENTIALS_DIRECTORY": str(root / "creds"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return out.stderr


def names(root):
    return (
        (root / "proc/sys/kernel/hostname").read_text(),
        (root / "etc/hostname").read_text(),
        (root / "etc/hosts").read_text(),
    )


def test_first_boot_sets_the_short_name_and_the_fqdn_line(guest):
    boot(guest, "web.example.com")
    kernel, static, hosts = names(guest)
    assert kernel == static == "web\n"
    assert hosts.splitlines() == [
        "127.0.0.1\tlocalhost",
        "::1\t\tlocalhost ip6-localhost ip6-loopback",
        "127.0.1.1\tweb.example.com web",
    ]
    assert (guest / "var/lib/kvmdrive/hostname").read_text() == "web.example.com\n"


def test_a_short_name_gets_a_short_line(guest):
    boot(guest, "db")
    assert "127.0.1.1\tdb\n" in names(guest)[2]
    assert "debian-12" not in names(guest)[2]


def test_a_name_set_in_the_guest_survives_its_reboots(guest):
    boot(guest, "web")
    # A role renames the machine; the guest reboots with the same credential.
    for path in ("proc/sys/kernel/hostname", "etc/hostname"):
        (guest / path).write_text("renamed\n")
    (guest / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\trenamed\n")
    before = names(guest)
    boot(guest, "web")
    assert names(guest) == before


def test_a_new_name_is_applied_once(guest):
    boot(guest, "web")
    boot(guest, "web2.lan")
    kernel, _, hosts = names(guest)
    assert kernel == "web2\n"
    assert hosts.count("127.0.1.1") == 1 and "127.0.1.1\tweb2.lan web2\n" in hosts


def test_a_machine_powered_off_before_the_state_was_written_names_itself_again(guest):
    boot(guest, "web")
    (guest / "var/lib/kvmdrive/hostname").write_text("")  # lost in the crash
    (guest / "etc/hostname").write_text("")
    boot(guest, "web")
    assert names(guest)[1] == "web\n"


@pytest.mark.parametrize("bad", ["", "-web", "web-", "a..b", "web.", "we b", "x;rm -rf /", "WEB", "a.-b"])
def test_anything_but_a_host_name_is_ignored(guest, bad):
    before = names(guest)
    assert "not a host name" in boot(guest, bad)
    assert names(guest) == before
    assert not (guest / "var/lib/kvmdrive").exists()
