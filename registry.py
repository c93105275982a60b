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

    def register(self, obj=None, *, name=None):
        def add(o):
            key = name or (o.__name__ if isinstance(o, type) else getattr(o, "name", None))
            if not isinstance(key, str) or not key:
                raise TypeError(f"a {self.kind} needs a name to be registered: {o!r}")
            self._items[key] = o
            return o
        return add if obj is None else add(obj)

    def get(self, name):
        if name not in self._items:
            raise UserError(f"{self.key}: unknown {self.kind} {name!r} "
                            f"(known: {', '.join(self._items) or 'none'})", arg=self.key)
        return self._items[name]

    __getitem__ = get

    def pop(self, name, default=None):
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


_IMPORTED = {}  # absolute file path -> module, so that a file is executed once per process


def import_modules(entries, base_dir=None, where="config.imports"):
    """Import each entry of ``entries``: a module name (``my_pkg.detector``) or a ``.py`` file
    (relative to ``base_dir``, the folder of the config that names it, else to the working
    directory). Returns the entries with files made absolute, as the run saves them."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise UserError(f"{where}: expected a list of module names or .py files, got {entries!r}",
                        arg=where)
    resolved = []
    for entry in entries:
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
            except ImportError as exc:
                raise UserError(f"{where}: cannot import {entry!r}: {exc}", arg=where) from None
            resolved.append(entry)
    return resolved


def _import_file(path, where):
    if path in _IMPORTED:
        return _IMPORTED[path]
    name = "recce_user_" + "".join(c if c.isalnum() else "_" for c in os.path.splitext(path)[0])
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except UserError:
        sys.modules.pop(name, None)
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: say which file failed, and how
        sys.modules.pop(name, None)
        raise UserError(f"{where}: importing {path} failed: {type(exc).__name__}: "
                        f"{' '.join(str(exc).split())}", arg=where) from None
    _IMPORTED[path] = module
    return module
