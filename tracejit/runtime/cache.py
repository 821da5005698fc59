"""The cache of generated programs. On disk: source files named by a content hash, written
atomically, compiled by Numba with `cache=True` so its machine code (pickles in `__pycache__`)
is reused by the next process; a file that fails to load is reported once, removed and rebuilt.

Numba's cache files are pickles, so loading one runs whatever it holds: the disk cache is used
only when its directory, its `__pycache__` and every file a module would load are owned by the
current user and not writable by group or others (directories tracejit creates are 0700). A
directory that fails those checks, or that cannot be created or written, is reported once and
compiled code stays in memory (the same source, compiled without `cache=True` from a string:
nothing is read from or written to disk). Generated source is always compiled from the text
tracejit produced, never from a file or a `.pyc`. Whether a module goes to disk or stays in
memory is decided here only (`load_module`); the code generator always writes `JIT_DECORATOR`."""

from __future__ import annotations

import functools
import hashlib
import linecache
import os
import platform
import stat
import sys
import tempfile
import types

import numba

from ..errors import warn_at_user
from ..flags import get as get_flag

VERSION = "0.1.0"
# the decorator the code generator puts on every njit function; in memory it loses cache=True
JIT_DECORATOR = '@numba.njit(cache=True, error_model="numpy")'
_IN_MEMORY_DECORATOR = '@numba.njit(error_model="numpy")'
_MODULES: dict[str, types.ModuleType] = {}
_reported: set[str] = set()
_verdicts: dict[str, str] = {}  # cache directory -> "" (usable) or why it is not
_numba_dirs: dict[str, str] = {}  # module name -> the directory Numba caches it in
_GENERATED = "<tracejit "  # the file name prefix of modules compiled in memory
_NUMBA_DIR = os.path.dirname(os.path.abspath(numba.__file__))


def configured_dir() -> str:
    """The cache directory asked for: TRACEJIT_CACHE_DIR, else the user's cache directory."""
    d = get_flag("cache_dir") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "tracejit")
    return os.path.abspath(d)


def cache_dir() -> str | None:
    """The directory compiled programs are cached in, created (0700) when absent; None when
    the disk cache is switched off (TRACEJIT_DISK_CACHE=0) or the directory cannot be trusted
    or used (reported once, with the reason)."""
    if not get_flag("disk_cache"):
        return None
    d = configured_dir()
    why = _verdicts.get(d)
    if why is None:
        why = _verdicts[d] = _prepare(d)
        if why:
            _warn(f"tracejit: not using the compile cache {d}: {why}; compiled code stays in "
                  "memory for this process (set TRACEJIT_CACHE_DIR to a directory of your own "
                  "that only you can write, or TRACEJIT_DISK_CACHE=0 to silence this)")
    return None if why else d


def _not_users(fn: str) -> bool:
    """Frames that are not the user's line either: Numba, tracejit's kernels, generated
    modules (compiled in memory, or files in a cache directory)."""
    return (fn.startswith(_GENERATED) or os.path.abspath(fn).startswith((_NUMBA_DIR, _KERNELS_DIR))
            or os.path.dirname(os.path.abspath(fn)) in _verdicts)


def _kernels_dir() -> str:
    import importlib.util

    spec = importlib.util.find_spec("tracejit.kernels")
    if spec is None or not spec.origin:  # pragma: no cover - installed without the kernels
        return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "kernels")
    return os.path.dirname(os.path.abspath(spec.origin))


_KERNELS_DIR = _kernels_dir()


def _warn(msg: str, key: str | None = None) -> None:
    """Warn once per message (or per `key`), pointing at the user's line."""
    key = msg if key is None else key
    if key in _reported:
        return
    _reported.add(key)
    warn_at_user(msg, RuntimeWarning, _not_users)


# ---- is a directory or file ours alone? ----------------------------------------------------------


def _mkdirs_private(d: str) -> None:
    """Create `d` and every missing parent with mode 0700 (os.makedirs gives parents 0777)."""
    missing = []
    p = d
    while not os.path.lexists(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:  # made meanwhile (by us or by someone else): checked below
            pass


def _owned_privately(st: os.stat_result, what: str) -> str:
    """Why `st` (a directory or file) cannot be trusted, or "" when it can."""
    uid = os.getuid()
    if st.st_uid != uid:
        return f"{what} is owned by uid {st.st_uid}, not by the current user (uid {uid})"
    if st.st_mode & 0o022:
        return (f"{what} is writable by {'group' if st.st_mode & 0o020 else 'others'} "
                f"(mode {stat.S_IMODE(st.st_mode):o})")
    return ""


def _check_dir(d: str, create: bool) -> str:
    """Why directory `d` cannot hold trusted cache files, or "" when it can."""
    try:
        if create:
            _mkdirs_private(d)
        st = os.lstat(d)
        if stat.S_ISLNK(st.st_mode):  # tracejit never makes links: only the user's own
            if st.st_uid != os.getuid():
                return f"{d} is a symbolic link owned by uid {st.st_uid}"
            st = os.stat(d)
        if not stat.S_ISDIR(st.st_mode):
            return f"{d} is not a directory"
        why = _owned_privately(st, d)
        if why:
            return why
        tempfile.TemporaryFile(dir=d).close()  # writable? (as root, modes alone do not say)
    except OSError as e:
        return f"{d} cannot be used ({type(e).__name__}: {e.strerror or e})"
    return ""


def _prepare(d: str) -> str:
    return _check_dir(d, create=True) or _check_dir(os.path.join(d, "__pycache__"), create=True)


def _check_files(d: str, stem: str) -> str:
    """Why a file in `d` that module `stem` would load (its Numba index and data, a .pyc)
    cannot be trusted, or "" when all can."""
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return ""
    except OSError as e:
        return f"{d} cannot be listed ({e.strerror or e})"
    for n in names:
        if not n.startswith(stem + "."):
            continue
        p = os.path.join(d, n)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        except OSError as e:
            return f"{p} cannot be checked ({e.strerror or e})"
        if not stat.S_ISREG(st.st_mode):
            return f"{p} is not a regular file"
        why = _owned_privately(st, p)
        if why:
            return why
    return ""


def _numba_cache_dirs(mod: types.ModuleType) -> set[str]:
    """The directories Numba will read the cached machine code of `mod`'s functions from
    (`__pycache__` beside it, or under NUMBA_CACHE_DIR, or Numba's user-wide directory)."""
    dirs = set()
    for v in vars(mod).values():
        if isinstance(v, numba.core.registry.CPUDispatcher) and \
                getattr(v.py_func, "__globals__", None) is vars(mod):
            c = getattr(v, "_cache", None)
            path = getattr(c, "_cache_path", None)
            if path is None:
                path = os.path.join(os.path.dirname(mod.__file__ or ""), "__pycache__")
            dirs.add(path)
    return dirs


# ---- loading ------------------------------------------------------------------------------------


def _library_digest() -> str:
    """Hash of the hand-written kernels generated code calls (tracejit.kernels.cpu): Numba's
    cache does not follow calls into another module, so a changed `relu` there must change
    the name of every kernel compiled against the old one."""
    from ..kernels import cpu as library

    h = hashlib.sha256()
    folder = os.path.dirname(os.path.abspath(library.__file__))
    paths = [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(".py")]
    # and the random-number helpers kernels call (philox_draw), which live in tracejit itself
    paths.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "philox.py"))
    for path in paths:
        with open(path, "rb") as f:
            h.update(os.path.basename(path).encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


_LIBRARY: str | None = None


def content_hash(text: str) -> str:
    """Hash of generated source plus everything that changes what it compiles to."""
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY = _library_digest()
    h = hashlib.sha256()
    for part in (text, VERSION, numba.__version__, _CPU, sys.version, _LIBRARY):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _cpu_id() -> str:
    try:
        import llvmlite.binding as llvm

        return llvm.get_host_cpu_name() + ";" + llvm.get_host_cpu_features()
    except Exception:  # pragma: no cover - llvmlite without the binding layer
        return platform.processor()


_CPU = _cpu_id()


def write_atomic(path: str, data: bytes) -> None:
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # atomic: readers see the old file or the new, never half
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise


class _suppress:  # noqa: N801
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def load_module(name: str, text: str) -> types.ModuleType:
    """Module `name` compiled from generated source `text`: once per process (identical kernels
    are shared by name), from the disk cache when it can be trusted, else in memory."""
    mod = _MODULES.get(name)
    if mod is not None:
        return mod
    d = cache_dir()
    if d is not None:
        try:
            mod = _load_on_disk(name, text, d)
        except OSError as e:  # the directory became unusable (full disk, removed, ...)
            _warn(f"tracejit: cannot write {name} to the compile cache {d} "
                  f"({type(e).__name__}: {e.strerror or e}); compiling it in memory")
    if mod is None:
        mod = _load_in_memory(name, text)
    _MODULES[name] = mod
    return mod


def _new_module(name: str, filename: str, text: str) -> types.ModuleType:
    mod = types.ModuleType(f"tracejit_cache.{name}")
    mod.__file__ = filename
    code = compile(text, filename, "exec")  # from the text: no .pyc is ever read or written
    sys.modules[mod.__name__] = mod
    try:
        exec(code, vars(mod))
    except BaseException:
        sys.modules.pop(mod.__name__, None)
        raise
    return mod


def _load_on_disk(name: str, text: str, d: str) -> types.ModuleType | None:
    """The module, with Numba's cache beside its file; None (reported) when a cache file it
    would load cannot be trusted."""
    path = os.path.join(d, name + ".py")
    data = text.encode()
    existing = None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISREG(st.st_mode) and not _owned_privately(st, path):
            with open(path, "rb") as f:
                existing = f.read()
        if existing != data:
            _warn(f"tracejit: cache file {path} was stale or corrupted; rebuilt")
    if existing != data:
        write_atomic(path, data)  # replaces a planted link or file, never writes through it
    mod = _new_module(name, path, text)
    _load_without_refresh(mod)
    for nd in _numba_cache_dirs(mod):
        why = _check_dir(nd, create=False) or _check_files(nd, name)
        if why:  # reported once per directory: the other modules there are likely the same
            sys.modules.pop(mod.__name__, None)
            _warn(f"tracejit: not loading compiled code from the compile cache ({why}); "
                  "compiling in memory what would come from there", key="files:" + nd)
            return None
        _numba_dirs[name] = nd
    return mod


_runtime_ready = False


def _load_overload_no_refresh(c: object, sig: object, target_context: object) -> object:
    """Numba's `Cache.load_overload` without its `target_context.refresh()`.

    The refresh imports every one of Numba's lowering registries (NumPy's, linalg's, which
    imports SciPy, the typed containers, ...) and installs them in the typing and target
    contexts: 1.2-1.4 s of the warm start on a loaded 2-core machine, more than `import numba`
    itself, and nothing a cached function needs, since its machine code is already lowered.
    What loaded machine code does need is done here once: the NRT's symbols and atomics
    (which Numba sets up in that refresh) and the hash secret symbols
    (`numba.cpython.hashing`). The rest of the load is Numba's own: the same index, the same
    key (signature, target triple, CPU name and features), the same checks of Numba's version
    and of the source file's stamp. A miss still compiles through Numba's compiler, which
    refreshes both contexts itself before typing anything."""
    global _runtime_ready
    if not _runtime_ready:
        import numba.cpython.hashing  # noqa: F401 - registers _numba_hashsecret_* symbols
        from numba.core.runtime import rtsys

        rtsys.initialize(target_context)
        _runtime_ready = True
    with c._guard_against_spurious_io_errors():  # type: ignore[attr-defined]
        return c._load_overload(sig, target_context)  # type: ignore[attr-defined]


def load_without_refresh(*dispatchers: object) -> None:
    """Make these njit functions load their cached machine code with
    `_load_overload_no_refresh` (each dispatcher's own cache object; nothing global in Numba
    changes). A dispatcher without a disk cache, or a Numba whose cache class lacks the methods
    this relies on, is left as it is."""
    for v in dispatchers:
        c = getattr(v, "_cache", None)
        if isinstance(c, numba.core.caching.Cache) and hasattr(c, "_load_overload") and \
                hasattr(c, "_guard_against_spurious_io_errors"):
            c.load_overload = functools.partial(  # type: ignore[method-assign]
                _load_overload_no_refresh, c)


def _load_without_refresh(mod: types.ModuleType) -> None:
    """`load_without_refresh` for the njit functions generated module `mod` defines."""
    load_without_refresh(*[
        v for v in vars(mod).values()
        if isinstance(v, numba.core.registry.CPUDispatcher) and
        getattr(v.py_func, "__globals__", None) is vars(mod)])


def _load_in_memory(name: str, text: str) -> types.ModuleType:
    filename = f"{_GENERATED}{name}>"
    source = text.replace(JIT_DECORATOR, _IN_MEMORY_DECORATOR)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return _new_module(name, filename, source)


def seal(names: list[str]) -> None:
    """Drop group/other write permission from the Numba cache files just written for modules
    `names` (Numba creates them with the process umask, which may be 002)."""
    for name in names:
        nd = _numba_dirs.get(name)
        if nd is None:
            continue
        with _suppress():
            for n in os.listdir(nd):
                p = os.path.join(nd, n)
                if n.startswith(name + "."):
                    st = os.lstat(p)
                    if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and \
                            st.st_mode & 0o022:
                        os.chmod(p, stat.S_IMODE(st.st_mode) & ~0o022)


def discard(name: str) -> None:
    """Forget module `name` and delete its Numba cache files (a file that failed to load)."""
    nd = _numba_dirs.pop(name, None)
    if nd is not None:
        with _suppress():
            for n in os.listdir(nd):
                if n.startswith(name + "."):
                    with _suppress():
                        os.unlink(os.path.join(nd, n))
    forget(name)


# ---- kernels and constants referenced by generated modules ---------------------------------------
_KERNEL_SOURCES: dict[str, str] = {}
_CONSTANTS: dict[str, list] = {}


def module_path(name: str) -> str:
    """Where module `name` is (or would be) cached on disk."""
    return os.path.join(configured_dir(), name + ".py")


def register_kernel(name: str, source: str) -> None:
    _KERNEL_SOURCES[name] = source


def kernel_source(name: str) -> str | None:
    """The source registered for kernel `name` (None if none was)."""
    return _KERNEL_SOURCES.get(name)


def kernel(name: str) -> object:
    """Called by a generated driver module: the njit function of kernel `name`."""
    return getattr(load_module(name, _KERNEL_SOURCES[name]), name)


def register_constants(name: str, arrays: list) -> None:
    _CONSTANTS[name] = arrays


def constants(name: str) -> list:
    return _CONSTANTS[name]


def forget(name: str) -> None:
    """Drop a loaded module so the next load compiles it again (from disk or in memory)."""
    mod = _MODULES.pop(name, None)
    if mod is not None:
        sys.modules.pop(mod.__name__, None)
