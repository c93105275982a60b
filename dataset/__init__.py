"""Datasets by name: ``build_dataset(name, branch_cfg, seed)`` -> a ``FaceFrames`` dataset.

``name`` is ``data.name`` of the config; each layout lives in its own module and registers itself
(``dataset.registry``): FaceForensics, CelebDF, WildDeepfake, DFDC, DeepfakeBench (its dataset
JSON files) and ImageList (anyone's data).
A branch with ``demo: true`` belongs to the built-in demo dataset, which is made on first use; one
with ``self_blended: true`` keeps its real frames alone, each paired with its self-blended image
(dataset/self_blended.py).
"""
from errors import UserError

# isort: off
# imported to register the layouts, in this order (the order of DATASETS, of the sub-commands of
# tools/build_index.py and of the names an error lists)
from . import faceforensics, celeb_df, wild_deepfake, dfdc, image_list, deepfakebench  # noqa: F401
# isort: on
from .base import DEFAULT_MAX_PIXELS, BadImageLog, FaceFrames, Item, collate, read_rgb
from .common import in_holdout
from .demo import ensure_demo_root
from .registry import LAYOUTS, Layout, branch_schema, get_layout, make_rng, register_layout

DATASETS = tuple(LAYOUTS)


def build_dataset(name: str, branch_cfg: dict, seed: int = 2022, perturb=(),
                  exclude_holdout: float = 0.0, defer_normalize: bool = False) -> FaceFrames:
    """The dataset ``name`` for one branch of the dataset YAML (not modified); ``perturb`` lists
    test-time distortions ``(type, level)`` applied before the transforms (dataset/perturb.py).

    A branch with ``holdout: f`` is the fraction f of its split's videos set aside for validation
    (``common.in_holdout``); ``exclude_holdout=f`` leaves those same videos out (the training
    branch of a run that validates on them). ``defer_normalize`` hands uint8 images over and
    leaves a final Normalize to ``dataset.base.to_input`` (the trainer's and test.py's loaders)."""
    layout = get_layout(name)
    cfg = dict(branch_cfg)
    if layout.needs_root and "root" not in cfg:
        raise UserError(f"{name}: the dataset branch needs 'root'")
    if cfg.get("demo"):
        ensure_demo_root(cfg["root"])
    items = layout.read(cfg, make_rng(seed))
    if cfg.get("holdout"):
        items = [it for it in items if in_holdout(it.video, cfg["holdout"])]
    if exclude_holdout:
        items = [it for it in items if not in_holdout(it.video, exclude_holdout)]
    where = f"{name} {cfg.get('split', '')} ({cfg.get('root') or cfg.get('index')})"
    if cfg.get("self_blended"):  # real frames alone, each paired with its self-blended image
        if perturb:
            raise UserError(f"{where}: test-time distortions do not apply to a self_blended "
                            "branch")
        from .self_blended import SelfBlendedFrames
        return SelfBlendedFrames(items, cfg, seed=seed, name=where,
                                 on_bad_image=cfg.get("on_bad_image", "skip"),
                                 max_pixels=cfg.get("max_pixels", DEFAULT_MAX_PIXELS),
                                 defer_normalize=defer_normalize)
    return FaceFrames(items, cfg.get("transforms", []), seed=seed,
                      on_bad_image=cfg.get("on_bad_image", "skip"), name=where,
                      max_pixels=cfg.get("max_pixels", DEFAULT_MAX_PIXELS), perturb=perturb,
                      defer_normalize=defer_normalize)


__all__ = ["DATASETS", "LAYOUTS", "BadImageLog", "FaceFrames", "Item", "Layout", "branch_schema",
           "build_dataset", "collate", "read_rgb", "register_layout"]
