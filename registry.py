"""One registry class for everything a config names: detectors (``model.name``), losses, dataset
layouts (``data.name``) and face detectors (``--detector``).

A user's own detector, loss or layout lives in a file of its own that registers it; the config's
``config.imports`` list names such files (or importable modules), and they are imported before
anything is built, so nothing in the project has to be edited (``import_modules``).
"""
import importlib
import importlib.util
import os
import sys

from errors import UserError


class Registry:
    """Names -> objects of one kind. ``register`` is a decorator (or a plain call); ``get`` raises a
    UserError that names the config key and lists the known names."""

    def __init__(self, kind: str, key: str):
        self.kind = kind  # "detector", "loss", ...
        self.key = key  # where a config names one: "model.name", "data.name", ...
        self._items = {}
        self._origins = {}  # name -> (module name, module object, qualname) that registered it

    def register(self, obj=None, *, name=None, replace=False, module=None):
        """Add ``obj`` under ``name`` (default: a class's ``__name__``, else ``obj.name``). A name
        that is taken is refused, with both modules named, unless ``replace=True``; the same
        object again, or the same definition again (one file imported twice, by path and by
        module name), is not a second registration. ``module`` names the registering module
        where ``obj`` does not carry one (an instance rather than a class or function)."""
        def add(o):
            key = name or (o.__name__ if isinstance(o, type) else getattr(o, "name", None))
            if not isinstance(key, str) or not key:
                raise TypeError(f"a {self.kind} needs a name to be registered: {o!r}")
            if self._items.get(key) is o:
                return o  # the very same object again: nothing changes
            origin = module or _defining_module(o)
            new = (origin, sys.modules.get(origin) if origin else None,
                   getattr(o, "__qualname__", None) or type(o).__qualname__)
            if key in self._items and not replace and not _again(self._origins[key], new):
                raise UserError(
                    f"{self.key}: {origin_text(origin)} registers a {self.kind} named {key!r}, "
                    f"which {origin_text(self._origins[key][0])} has registered already; "
                    f"choose another name, or register it with replace=True to replace it")
            self._items[key] = o
            self._origins[key] = new
            return o
        return add if obj is None else add(obj)

    def origin(self, name):
        """The module that registered ``name`` (a module name; None when unknown)."""
        return self._origins.get(name, (None,))[0]

    def get(self, name):
        if name not in self._items:
            raise UserError(f"{self.key}: unknown {self.kind} {name!r} "
                            f"(known: {', '.join(self._items) or 'none'})", arg=self.key)
        return self._items[name]

    __getitem__ = get

    def pop(self, name, default=None):
        self._origins.pop(name, None)
        return self._items.pop(name, default)

    def names(self):
        return list(self._items)

    def values(self):
        return list(self._items.values())

    def items(self):
        return list(self._items.items())

    def __contains__(self, name):
        return name in self._items

    def __iter__(self):
        return iter(list(self._items))

    def __len__(self):
        return len(self._items)

    def __repr__(self):
        return f"Registry({self.kind}: {', '.join(self._items)})"


def _defining_module(obj):
    """The module a class or function was defined in; None for other objects."""
    if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__"):
        return getattr(obj, "__module__", None)
    return None


def _module_file(module):
    mod = sys.modules.get(module) if module else None
    path = getattr(mod, "__file__", None)
    return os.path.realpath(path) if path else None


def _again(old, new):
    """Whether a registration (module name, module object, qualname) repeats ``old``'s: the same
    file executed again (imported under a second name, by path and by module name, or reloaded),
    not a definition of another file or a second one of the same execution. An object that is
    not a class or function is known by the qualname of its type."""
    (a, a_mod, a_name), (b, b_mod, b_name) = old, new
    if a is None or b is None:
        return False
    same_file = a == b or (_module_file(a) is not None and _module_file(a) == _module_file(b))
    return same_file and (a_mod is not b_mod or (a_name is not None and a_name == b_name))


def origin_text(module):
    """A registering module as a user knows it: a file imported by path by its path, else its
    module name."""
    if module is None:
        return "an unknown module"
    if module.startswith(FILE_MODULE_PREFIX):
        return _module_file(module) or module
    return module


def import_entry(module):
    """The ``imports`` / ``--import`` entry that brings ``module`` in again in a new process: the
    file of a module imported by path, the name of any other."""
    if module is None:
        return None
    if module.startswith(FILE_MODULE_PREFIX):
        return next((p for p, m in _IMPORTED.items() if m.__name__ == module),
                    _module_file(module))
    return module


FILE_MODULE_PREFIX = "recce_user_"  # the module name of a user's file imported by path
_IMPORTED = {}  # absolute file path -> module, so that a file is executed once per process


def import_modules(entries, base_dir=None, where="config.imports"):
    """Import each entry of ``entries``: a module name (``my_pkg.detector``) or a ``.py`` file
    (relative to ``base_dir``, the folder of the config that names it, else to the working
    directory); one string is one entry. Whatever an import raises is one UserError naming the
    entry and the exception. Returns the entries with files made absolute, as the run saves
    them."""
    if entries is None:
        return []
    if isinstance(entries, (str, os.PathLike)):
        entries = [entries]
    if not isinstance(entries, (list, tuple)):
        raise UserError(f"{where}: expected a module name, a .py file or a list of them, got "
                        f"{entries!r}", arg=where)
    resolved = []
    for entry in entries:
        if isinstance(entry, os.PathLike):
            entry = os.fspath(entry)
        if not isinstance(entry, str) or not entry.strip():
            raise UserError(f"{where}: {entry!r} is not a module name or a .py file",
                            arg=where)
        if entry.endswith(".py"):
            candidates = [os.path.join(base_dir, entry)] if base_dir else []
            candidates.append(entry)
            path = next((os.path.abspath(c) for c in candidates if os.path.isfile(c)), None)
            if path is None:
                raise UserError(f"{where}: file not found: {entry}"
                                + (f" (looked in {base_dir} and the working directory)"
                                   if base_dir else ""), arg=where)
            _import_file(path, where)
            resolved.append(path)
        else:
            try:
                importlib.import_module(entry)
            except UserError:
                raise
            except ImportError as exc:
                raise UserError(f"{where}: cannot import {entry!r}: {_text(exc)}",
                                arg=where) from None
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code: say which
                raise UserError(f"{where}: importing {entry!r} failed: "  # module, and how
                                f"{type(exc).__name__}: {_text(exc)}", arg=where) from None
            resolved.append(entry)
    return resolved


def _text(exc):
    return " ".join(str(exc).split())


def _import_file(path, where):
    if path in _IMPORTED:
        return _IMPORTED[path]
    name = FILE_MODULE_PREFIX + "".join(c if c.isalnum() else "_"
                                        for c in os.path.splitext(path)[0])
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except UserError:
        sys.modules.pop(name, None)
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code: say which file
        sys.modules.pop(name, None)  # failed, and how
        raise UserError(f"{where}: importing {path} failed: {type(exc).__name__}: "
                        f"{_text(exc)}", arg=where) from None
    _IMPORTED[path] = module
    return module
