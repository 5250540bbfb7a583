"""The box's bytecode cache for Ansible payload zips (kvmdrive_ansiballz_cache).

Run by scripts/test with the other pytest suites; the box's Python is Debian
12's 3.11, the same as the host's.
"""

import importlib
import os
import pathlib
import sys
import traceback
import zipfile

import pytest

BOX_SITE = pathlib.Path(__file__).resolve().parents[1] / "files/usr/lib/python3/dist-packages"
# No __pycache__ in files/: ./build copies that tree into the image and hashes it.
sys.dont_write_bytecode, _saved = True, sys.dont_write_bytecode
sys.path.insert(0, str(BOX_SITE))
import kvmdrive_ansiballz_cache as cache  # noqa: E402  (installs the hook)

sys.path.remove(str(BOX_SITE))
sys.dont_write_bytecode = _saved

SOURCES = {
    "pkg/__init__.py": "VALUE = 'package'\n",
    "pkg/util.py": "def boom():\n    raise RuntimeError('from util')\n\nNAME = __name__\r\n",
    "pkg/mod.py": "from pkg.util import NAME\nANSWER = 42\n",
}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A private cache root, a compile counter, and imports undone afterwards."""
    root = tmp_path / "cache"
    root.mkdir()
    monkeypatch.setattr(cache, "CACHE_ROOT", str(root))
    monkeypatch.setattr(cache, "_cache_dir", [])
    compiled = []
    real = cache.compile_source

    def counting(source, filename):
        compiled.append(filename)
        return real(source, filename)

    monkeypatch.setattr(cache, "compile_source", counting)
    saved_path = list(sys.path)
    yield root, compiled
    sys.path[:] = saved_path
    for name in [n for n in sys.modules if n == "pkg" or n.startswith("pkg.")]:
        del sys.modules[name]
    sys.path_importer_cache.clear()


def payload(tmp_path, run, sources=SOURCES, name="ansible_stat_payload.zip"):
    """A zip like the one AnsiballZ writes for one task."""
    d = tmp_path / f"ansible_stat_payload_{run}"
    d.mkdir()
    z = d / name
    with zipfile.ZipFile(z, "w") as f:
        for entry, text in sources.items():
            f.writestr(entry, text)
    return z


def import_from(z, module="pkg.mod"):
    for name in [n for n in sys.modules if n == "pkg" or n.startswith("pkg.")]:
        del sys.modules[name]
    sys.path.insert(0, str(z))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(z))


@pytest.mark.parametrize(
    "path, handled",
    [
        ("/tmp/ansible_stat_payload_x1/ansible_stat_payload.zip", True),
        ("/tmp/ansible_stat_payload_x1/ansible_stat_payload.zip/ansible/module_utils", True),
        ("/tmp/a/ansible_community.general.ini_file_payload.zip", True),
        ("/tmp/a/ansible_stat_payload.zipper", False),
        ("/tmp/a/mything_payload.zip", False),
        ("/usr/lib/python311.zip", False),
        ("/usr/lib/python3/dist-packages", False),
    ],
)
def test_only_ansible_payload_zips_are_handled(path, handled):
    assert cache.is_payload(path) is handled


def test_second_payload_loads_cached_code_under_its_own_name(env, tmp_path):
    root, compiled = env
    first = import_from(payload(tmp_path, "a"))
    assert first.ANSWER == 42 and first.NAME == "pkg.util"
    assert len(compiled) == 3  # once each, not twice as zipimport does
    entries = os.listdir(root / str(os.geteuid()))
    assert len(entries) == 3 and not [e for e in entries if e.endswith(".tmp")]

    z = payload(tmp_path, "b")
    second = import_from(z)
    assert second.ANSWER == 42
    assert len(compiled) == 3, "the second payload compiled again"
    util = sys.modules["pkg.util"]
    assert util.__file__ == f"{z}/pkg/util.py"
    assert util.boom.__code__.co_filename == f"{z}/pkg/util.py"
    with pytest.raises(RuntimeError) as raised:
        util.boom()
    assert traceback.extract_tb(raised.tb)[-1].filename == f"{z}/pkg/util.py"


def test_changed_source_is_compiled_again(env, tmp_path):
    _, compiled = env
    import_from(payload(tmp_path, "a"))
    changed = dict(SOURCES, **{"pkg/mod.py": "from pkg.util import NAME\nANSWER = 7\n"})
    assert import_from(payload(tmp_path, "b", changed)).ANSWER == 7
    assert compiled[3:] == [f"{tmp_path}/ansible_stat_payload_b/ansible_stat_payload.zip/pkg/mod.py"]


def test_corrupt_entry_is_replaced(env, tmp_path):
    root, compiled = env
    import_from(payload(tmp_path, "a"))
    for entry in (root / str(os.geteuid())).iterdir():
        entry.write_bytes(b"\xe3garbage")
    assert import_from(payload(tmp_path, "b")).ANSWER == 42
    assert len(compiled) == 6
    assert import_from(payload(tmp_path, "c")).ANSWER == 42
    assert len(compiled) == 6


def test_cache_of_another_owner_or_open_mode_is_not_used(env, tmp_path):
    root, compiled = env
    mine = root / str(os.geteuid())
    mine.mkdir(mode=0o700)
    os.chmod(mine, 0o777)  # anyone could have planted code here
    import_from(payload(tmp_path, "a"))
    import_from(payload(tmp_path, "b"))
    assert len(compiled) == 6
    assert os.listdir(mine) == []


def test_no_cache_root_still_imports(env, tmp_path, monkeypatch):
    _, compiled = env
    monkeypatch.setattr(cache, "CACHE_ROOT", str(tmp_path / "missing"))
    assert import_from(payload(tmp_path, "a")).ANSWER == 42
    assert len(compiled) == 3


def test_other_zips_and_bytecode_payloads_are_left_to_zipimport(env, tmp_path):
    _, compiled = env
    assert import_from(payload(tmp_path, "a", name="other.zip")).ANSWER == 42
    with_pyc = dict(SOURCES)
    with_pyc["pkg/mod.pyc"] = importlib.util.MAGIC_NUMBER  # zipimport would prefer it
    # The importer of the package's directory inside the zip, as Python makes it.
    importer = cache.path_hook(str(payload(tmp_path, "b", with_pyc)) + "/pkg")
    assert importer._source_entry("pkg.mod") is None
    assert importer._source_entry("pkg.util") == "pkg/util.py"
    assert compiled == []
