"""Datasets by name: ``build_dataset(name, branch_cfg, seed)`` -> a ``FaceFrames`` dataset.

``name`` is ``data.name`` of the config: FaceForensics, CelebDF, WildDeepfake, DFDC or ImageList
(anyone's data: a CSV/JSON-lines index or real/ and fake/ folders). A branch with ``demo: true``
belongs to the built-in demo dataset, which is made on first use when its root is missing.
"""
import os

from errors import UserError

from .base import BadImageLog, FaceFrames, Item, collate, read_rgb
from .demo import ensure_demo_data
from .layouts import LAYOUTS, make_rng

DATASETS = tuple(LAYOUTS)


def build_dataset(name: str, branch_cfg: dict, seed: int = 2022) -> FaceFrames:
    """The dataset ``name`` for one branch of the dataset YAML (not modified)."""
    if name not in LAYOUTS:
        raise UserError(f"data.name: unknown dataset {name!r} (known: {', '.join(LAYOUTS)})")
    cfg = dict(branch_cfg)
    if "root" not in cfg and "index" not in cfg:
        raise UserError(f"{name}: the dataset branch needs 'root'")
    if cfg.get("demo") and not os.path.isdir(cfg["root"]):
        ensure_demo_data(os.path.dirname(os.path.normpath(cfg["root"])))
    items = LAYOUTS[name](cfg, make_rng(seed))
    where = f"{name} {cfg.get('split', '')} ({cfg.get('root') or cfg.get('index')})"
    return FaceFrames(items, cfg.get("transforms", []), seed=seed,
                      on_bad_image=cfg.get("on_bad_image", "skip"), name=where)


__all__ = ["DATASETS", "BadImageLog", "FaceFrames", "Item", "build_dataset", "collate", "read_rgb"]
