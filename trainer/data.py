"""The training run's data: the branches prepared by the detector's input spec, the datasets and
their loaders (the sampler that can start part-way into an epoch, for an exact resume)."""
import logging
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, DistributedSampler

from dataset import build_dataset, collate
from dataset.base import worker_init
from dataset.face_crop import face_crop_of
from dataset.transforms import with_spec
from errors import UserError

from .config import branch

log = logging.getLogger("recce")


class StepSampler(DistributedSampler):
    """DistributedSampler that can start part-way into an epoch (for exact resume)."""

    def __init__(self, dataset, **kwargs):
        super().__init__(dataset, **kwargs)
        self.skip = 0

    def __iter__(self):
        """(epoch, index) pairs: the dataset seeds a sample's augmentation by them, so workers
        that persist across epochs need no word from the main process."""
        indices = list(super().__iter__())
        return iter([(self.epoch, i) for i in indices[self.skip:]])

    def __len__(self):
        return self.num_samples - self.skip


def build_loader(ds, batch_size, shuffle, workers, seed, rank, world, drop_last=False):
    """The DataLoader of ``ds`` for one of ``world`` processes (``rank``): a ``StepSampler``,
    workers that persist across epochs, batches collated by ``dataset.collate``."""
    sampler = StepSampler(ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed,
                          drop_last=drop_last)
    # An own generator: creating loader iterators must not draw from the global RNG, which the
    # model's dropout and noise use (otherwise a resumed run would diverge).
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate, pin_memory=torch.cuda.is_available(),
                      drop_last=drop_last, persistent_workers=workers > 0,
                      worker_init_fn=worker_init,
                      generator=torch.Generator().manual_seed(seed))


def with_spec_of(branch_cfg, spec):
    """A training or validation branch whose transforms lack a resize or a normalisation gets the
    detector's (its default spec: one source of truth); what the dataset file states is kept."""
    out = dict(branch_cfg)
    out["transforms"], _ = with_spec(out.get("transforms"), spec, replace=False)
    return out


def holdout_of(train_cfg, val_cfg):
    """The fraction of the training split's videos to leave out of training: those the validation
    branch holds out of that same split (same root and split), else 0."""
    fraction = val_cfg.get("holdout") or 0.0
    same = all(val_cfg.get(k) == train_cfg.get(k) for k in ("root", "split", "index"))
    return fraction if fraction and same and not train_cfg.get("holdout") else 0.0


def pretrained_spec_warning(pretrained, cls, spec, data_file):
    """The warning when a run that starts from ``cls``'s pretrained weights normalises its data
    (``spec``, from ``data_file``) otherwise than those weights expect; None when it does not."""
    ref = cls.pretrained_spec
    if not pretrained or ref is None or spec.same_normalisation(ref):
        return None
    return (f"{data_file} normalises with mean {list(spec.mean)}, std {list(spec.std)}, but the "
            f"pretrained {cls.__name__} weights expect mean {list(ref.mean)}, std "
            f"{list(ref.std)}: set the Normalize of the dataset file to those, or "
            "model.pretrained: false")


@dataclass
class TrainingData:
    """What ``training_data`` builds: the training branch (with the spec's resize and
    normalisation), the datasets, their loaders (``val_set`` and ``val_loader`` None where the run
    does not validate) and the crop rule of the training faces."""

    train_cfg: dict
    train_set: object
    val_set: object
    train_loader: DataLoader
    val_loader: DataLoader | None
    face_crop: str | None


def training_data(cfg, spec, rank, world, validate=True):
    """The ``TrainingData`` of the config ``cfg`` for one of ``world`` processes, each branch
    prepared by ``spec`` (the detector's input spec); the validation branch only where
    ``validate``. Rank 0 says the face crop and the videos a holdout leaves out."""
    train_cfg = with_spec_of(branch(cfg, "train"), spec)
    for key in ("num_steps", "log_steps", "val_steps"):
        if key not in train_cfg:
            raise UserError(f"{cfg['data']['train_branch']}.{key} is missing in "
                            f"{cfg['data']['file']}")
    seed = cfg["config"]["seed"]
    val_cfg = with_spec_of(branch(cfg, "val"), spec) if validate else None
    held = 0.0 if val_cfg is None else holdout_of(train_cfg, val_cfg)
    train_set = build_dataset(cfg["data"]["name"], train_cfg, seed, exclude_holdout=held,
                              defer_normalize=True)
    val_set = None if val_cfg is None else build_dataset(cfg["data"]["name"], val_cfg, seed,
                                                         defer_normalize=True)
    # the crop rule of the training faces, saved with every checkpoint: scoring raw media cuts
    # faces the same way
    face_crop = face_crop_of(train_set.items, cfg["data"]["name"])
    if rank == 0:
        log.info("face crop: %s", f"{face_crop} (the training data's)" if face_crop
                 else "not stated by the training data (scoring raw media uses box)")
    if held and rank == 0:
        log.info("validation: %d videos held out of the %s split (holdout %g); training on "
                 "the other %d", len({it.video for it in val_set.items}), train_cfg.get("split"),
                 held, len({it.video for it in train_set.items}))
    workers = cfg["data"]["num_workers"]
    # a batch of N images: N frames, or N / 2 real frames each with its self-blended image
    train_loader = build_loader(train_set, train_set.frames_per_batch(
        cfg["data"]["train_batch_size"]), True, workers, seed, rank, world, drop_last=False)
    val_loader = None if val_set is None else build_loader(
        val_set, val_set.frames_per_batch(cfg["data"]["val_batch_size"]), False, workers, seed,
        rank, world)
    return TrainingData(train_cfg, train_set, val_set, train_loader, val_loader, face_crop)


def branch_loader(cfg, name, spec, batch_size, rank, world):
    """The loader of the dataset file's branch ``name``, prepared by ``spec`` as the validation
    branch is, unshuffled: this process's share of it."""
    seed = cfg["config"]["seed"]
    ds = build_dataset(cfg["data"]["name"], with_spec_of(cfg["dataset"][name], spec), seed,
                       defer_normalize=True)
    return build_loader(ds, ds.frames_per_batch(batch_size), False, cfg["data"]["num_workers"],
                        seed, rank, world)
