"""The registry of dataset layouts: one module per layout registers its reader, the branch keys it
accepts and its index builder; config validation and tools/build_index.py read this registry.

A layout is added by writing one module that calls ``register_layout(Layout(...))``: the project's
own are imported in ``dataset/__init__.py``, a user's file through the config's ``config.imports``.
"""
import random
import sys
from dataclasses import dataclass, field
from typing import Callable

from registry import Registry


@dataclass
class Layout:
    name: str  # data.name in the config
    read: Callable  # (branch cfg, random.Random) -> [Item]
    keys: dict = field(default_factory=dict)  # its own branch keys -> kind (trainer.config)
    index_name: str | None = None  # the sub-command of tools/build_index.py
    add_arguments: Callable | None = None  # (argparse parser) -> None
    build_index: Callable | None = None  # (argparse namespace) -> lines to print
    needs_root: bool = True
    description: str = ""


LAYOUTS = Registry("dataset", "data.name")
# Keys of a dataset branch that every layout accepts, with their kind (see trainer.config); a layout
# adds its own in ``Layout.keys``.
COMMON_BRANCH_KEYS = {
    "root": "name", "split": "name", "transforms": "list", "log_steps": "posint",
    "val_steps": "posint", "num_steps": "posint", "on_bad_image": ("skip", "error"),
    "demo": "bool", "max_pixels": "pixels", "holdout": "fraction",
    # real frames alone, each paired with its self-blended image (dataset/self_blended.py)
    "self_blended": "bool", "self_blended_landmarks": "name",
    "self_blended_crop": ("frame", "landmarks"),
}


def register_layout(layout: Layout, replace: bool = False) -> Layout:
    """Register ``layout`` under its name; a name that is taken is refused unless ``replace``."""
    caller = sys._getframe(1).f_globals.get("__name__")  # the layout's module, for the messages
    return LAYOUTS.register(layout, name=layout.name, replace=replace, module=caller)


get_layout = LAYOUTS.get


def branch_schema(name) -> dict:
    """Every key a branch of the dataset ``name`` accepts, with its kind."""
    return {**COMMON_BRANCH_KEYS, **get_layout(name).keys}


def make_rng(seed):
    return random.Random(seed)
