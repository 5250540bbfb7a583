"""Keep the compiled code of Ansible's module payloads (kvmdrive box).

Ansible sends every task to the guest as a fresh zip (AnsiballZ:
/tmp/ansible_MODULE_payload_XXXX/ansible_MODULE_payload.zip) holding the
module and all its module_utils. Python's zipimport never writes bytecode,
and before Python 3.13 it compiles each module of a zip twice, so every task
compiles the same ~120 sources again: about 1.1 s of a 2.2 s module run under
TCG. This import hook, installed for every Python by kvmdrive-ansiballz-cache.pth,
handles only those payload zips: it keeps each module's code object on disk,
keyed by a SHA-256 of its source, and loads it instead of compiling.

- Per user: /var/cache/kvmdrive-ansiballz/UID, a directory of mode 0700 that
  the user must own; anything else there (another owner, looser mode) turns
  the cache off for that user, so no user runs code another one wrote.
- Any failure (no such directory, full disk, a corrupt entry) falls back to
  compiling, as zipimport would; a zip that carries bytecode of its own, any
  other zip and any other import are left to Python as they are.
- Tracebacks, __file__ and co_filename name the current zip, as without it.
- Remove this file and the .pth to turn it off; `rm -rf
  /var/cache/kvmdrive-ansiballz/*` empties it.
"""

import sys
import zipimport

CACHE_ROOT = "/var/cache/kvmdrive-ansiballz"
_MARK = "_payload.zip"


def is_payload(path):
    """True for an AnsiballZ zip, or a package directory inside one."""
    i = path.find(_MARK)
    if i < 0:
        return False
    end = i + len(_MARK)
    if end != len(path) and path[end] != "/":
        return False
    return path[path.rfind("/", 0, i) + 1 : i].startswith("ansible_")


_cache_dir = []  # [path or None] once looked up: one mkdir per process


def _user_cache():
    """This user's cache directory, made on first use; None when unusable."""
    if not _cache_dir:
        _cache_dir.append(_open_user_cache())
    return _cache_dir[0]


def _open_user_cache():
    import os
    import stat

    path = "%s/%d" % (CACHE_ROOT, os.geteuid())
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return None
    return path


class CachingZipImporter(zipimport.zipimporter):
    """zipimport's importer, with compiled code kept between payloads."""

    def _source_entry(self, fullname):
        """The zip entry of fullname's source, or None to leave it to zipimport."""
        files = getattr(self, "_files", None)
        if not isinstance(files, dict):
            return None
        base = self.prefix + fullname.rpartition(".")[2]
        # zipimport prefers bytecode in the zip; then it is not ours to handle.
        if base + "/__init__.pyc" in files or base + ".pyc" in files:
            return None
        for entry in (base + "/__init__.py", base + ".py"):
            if entry in files:
                return entry
        return None

    def get_filename(self, fullname):
        # zipimport compiles the module to answer this; the name is enough.
        entry = self._source_entry(fullname)
        if entry is None:
            return super().get_filename(fullname)
        return self.archive + "/" + entry

    def get_code(self, fullname):
        entry = self._source_entry(fullname)
        if entry is None:
            return super().get_code(fullname)
        filename = self.archive + "/" + entry
        # As zipimport does: universal newlines, no inherited __future__ flags.
        source = self.get_data(entry).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        cache = _user_cache()
        if cache is None:
            return compile_source(source, filename)
        return _cached_code(cache, source, filename)


def compile_source(source, filename):
    return compile(source, filename, "exec", dont_inherit=True)


def _cached_code(cache, source, filename):
    import _imp
    import marshal
    import os

    try:  # loaded at start-up; importlib.util would import more
        MAGIC_NUMBER = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER
    except (KeyError, AttributeError):
        from importlib.util import MAGIC_NUMBER
    try:
        from _sha256 import sha256  # no OpenSSL start-up (hashlib's) per task
    except ImportError:
        from hashlib import sha256
    key = sha256(MAGIC_NUMBER + bytes([sys.flags.optimize]) + source).hexdigest()
    path = cache + "/" + key
    try:
        with open(path, "rb") as f:
            code = marshal.loads(f.read())
        if type(code).__name__ == "code":
            _imp._fix_co_filename(code, filename)
            return code
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = compile_source(source, filename)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(marshal.dumps(code))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return code


def path_hook(path):
    if is_payload(path):
        return CachingZipImporter(path)
    raise ImportError("not an Ansible payload zip")


def install():
    if path_hook not in sys.path_hooks:
        sys.path_hooks.insert(0, path_hook)


install()
