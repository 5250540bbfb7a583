"""Where the plugin finds kvmdrive: $KVMDRIVE_BIN, then its own, then PATH."""

from __future__ import annotations

import os
import subprocess
import sys

from pathlib import Path

import pytest

from molecule_kvmdrive import binary
from molecule_kvmdrive.binary import BIN_ENV, find_binary, installed_binary


def fake_kvmdrive(directory: Path, *, executable: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "kvmdrive"
    path.write_text("#!/bin/sh\necho fake\n", encoding="utf-8")
    path.chmod(0o755 if executable else 0o644)
    return path


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A scripts dir (sysconfig), an interpreter dir, a PATH dir; all empty, no KVMDRIVE_BIN."""
    d = {name: tmp_path / name for name in ("scripts", "python", "path", "explicit")}
    for p in d.values():
        p.mkdir()
    monkeypatch.delenv(BIN_ENV, raising=False)
    monkeypatch.setattr(
        binary.sysconfig, "get_path", lambda name: str(d["scripts"]) if name == "scripts" else ""
    )
    monkeypatch.setattr(binary.sys, "executable", str(d["python"] / "python3"))
    monkeypatch.setenv("PATH", str(d["path"]))
    return d


def test_nothing_anywhere(dirs: dict[str, Path]) -> None:
    assert find_binary() is None
    assert installed_binary() is None


def test_path_is_the_last_resort(dirs: dict[str, Path]) -> None:
    on_path = fake_kvmdrive(dirs["path"])
    assert find_binary() == str(on_path)


def test_the_packages_own_binary_beats_path(dirs: dict[str, Path]) -> None:
    fake_kvmdrive(dirs["path"])
    own = fake_kvmdrive(dirs["scripts"])
    assert find_binary() == str(own)


def test_beside_the_interpreter_when_scripts_has_none(dirs: dict[str, Path]) -> None:
    fake_kvmdrive(dirs["path"])
    beside = fake_kvmdrive(dirs["python"])
    assert find_binary() == str(beside)
    own = fake_kvmdrive(dirs["scripts"])
    assert find_binary() == str(own)


def test_a_non_executable_file_is_skipped(dirs: dict[str, Path]) -> None:
    fake_kvmdrive(dirs["scripts"], executable=False)
    on_path = fake_kvmdrive(dirs["path"])
    assert find_binary() == str(on_path)


def test_kvmdrive_bin_beats_everything(dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    fake_kvmdrive(dirs["scripts"])
    fake_kvmdrive(dirs["path"])
    explicit = fake_kvmdrive(dirs["explicit"])
    monkeypatch.setenv(BIN_ENV, str(explicit))
    assert find_binary() == str(explicit)


def test_a_bad_kvmdrive_bin_is_not_silently_replaced(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_kvmdrive(dirs["scripts"])
    monkeypatch.setenv(BIN_ENV, str(dirs["explicit"] / "missing"))
    assert find_binary() is None


def test_the_playbooks_lookup_prints_the_same(tmp_path: Path) -> None:
    """`python -m molecule_kvmdrive.binary` (what create.yml/destroy.yml run) in a child."""
    explicit = fake_kvmdrive(tmp_path)
    env = dict(os.environ, PATH="/nonexistent", **{BIN_ENV: str(explicit)})
    out = subprocess.run(
        [sys.executable, "-m", "molecule_kvmdrive.binary"],
        env=env, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == str(explicit)
    env[BIN_ENV] = str(tmp_path / "missing")
    bad = subprocess.run(
        [sys.executable, "-m", "molecule_kvmdrive.binary"],
        env=env, capture_output=True, text=True, check=False,
    )
    assert bad.returncode == 1
    assert bad.stdout == ""


def test_the_lookup_does_not_import_molecule(tmp_path: Path) -> None:
    """The playbooks run the lookup on every create/destroy: it must stay cheap."""
    code = "import sys, molecule_kvmdrive.binary; print('molecule' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_playbooks_ask_the_lookup() -> None:
    playbooks = Path(binary.__file__).with_name("playbooks")
    for name in ("create.yml", "destroy.yml"):
        text = (playbooks / name).read_text(encoding="utf-8")
        assert "-m molecule_kvmdrive.binary" in text, name
