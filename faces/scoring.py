"""Face crops -> fake probabilities: the one scorer of inference.py, the Python API
(``faces.api.Predictor``) and the video and photo path (``faces.media``), and the one shape of
what they report: the output line and the ``--output`` row of a crop.
"""
import math

import torch
from torch.utils.data import DataLoader, Dataset

from dataset import read_rgb
from dataset.base import DEFAULT_MAX_PIXELS, iterate_quietly, worker_init
from dataset.transforms import eval_transforms
from errors import UserError
from model.heatmap import evidence_maps

# a crop's --output row: the original's four columns, then the raw probability (before
# calibration; the same number for a checkpoint without one) and the threshold the prediction was
# made at, with where it came from (``model.calibration.resolve_threshold``), and what scored it
# (``model.backends``)
CROP_COLUMNS = ("path", "fake_probability", "prediction", "error", "raw_probability",
                "threshold", "threshold_source", "backend", "precision", "threshold_lower",
                "threshold_level", "threshold_fpr_upper", "threshold_supported")


def as_band(threshold):
    """A threshold as a ``model.calibration.Band`` (a number: one threshold, given)."""
    from model.calibration import Band
    if isinstance(threshold, Band):
        return threshold
    return Band(float(threshold), float(threshold), "given")


def band_fields(band):
    """The record fields that say what a prediction was judged by: the fake threshold, where it
    came from, the lower end of an uncertain band (the same number for one threshold), the level
    of its operating points, the 95 % upper bound of the deciding point's validation FPR, and
    whether the validation data supports the points (None: no stored point or bound)."""
    return {"threshold": band.upper, "threshold_source": band.source,
            "threshold_lower": band.lower, "threshold_level": band.level,
            "threshold_fpr_upper": band.fpr_upper, "threshold_supported": band.supported}


class _Crops(Dataset):
    """Decodes (a path) or takes (an RGB array), resizes and normalizes one crop, in a worker
    where there are workers; a file that cannot be read yields its error instead."""

    def __init__(self, items, transform, max_pixels):
        self.items, self.transform, self.max_pixels = items, transform, max_pixels

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        if isinstance(item, str):
            try:
                item = read_rgb(item, self.max_pixels)
            except UserError as exc:
                return {"index": i, "error": str(exc)}
        return {"index": i, "image": self.transform(image=item)["image"]}


def _collate(samples):
    good = [s for s in samples if "image" in s]
    return {"index": [s["index"] for s in good],
            "image": torch.stack([s["image"] for s in good]) if good else None,
            "errors": [(s["index"], s["error"]) for s in samples if "error" in s]}


class CropScorer:
    """Face crops -> fake probabilities, prepared by the detector's own input spec (the one its
    checkpoint was trained with), ``batch_size`` crops per forward pass. A crop is a path (decoded
    by ``num_workers`` DataLoader workers, refused above ``max_pixels``) or an H x W x 3 RGB uint8
    array. ``forward(x, aux)`` gives the scores (``model.score``, or its CUDA graphs). The
    probabilities are calibrated by ``calibration`` (``model.calibration.Calibration``; by default
    the detector's, from its checkpoint), applied to the logit; the raw ones come beside them."""

    def __init__(self, model, device, batch_size, num_workers=0, max_pixels=None, forward=None,
                 calibration="model"):
        self.model, self.device = model, device
        self.batch_size, self.num_workers = batch_size, num_workers
        self.max_pixels = max_pixels or DEFAULT_MAX_PIXELS
        self.forward = forward or model.score
        self.transform = eval_transforms(model.spec)
        # "model": the detector's own (its checkpoint's), None: raw probabilities
        self.calibration = getattr(model, "calibration", None) if calibration == "model" \
            else calibration

    def stream(self, items, aux=False, num_workers=None, source=None):
        """Yields ``(index, probability, error, pair, raw)`` for every item, in order, a batch
        at a time: the (calibrated) probability and the raw one None and the error a message for a
        file that cannot be read;
        ``pair`` with ``aux``: the crop as the model saw it and its reconstruction (C x H x W on
        the CPU; None where the model does not reconstruct), else None. A probability that is not
        a finite number is a UserError naming the item (its path, else ``source``, else
        ``image <k>``)."""
        workers = self.num_workers if num_workers is None else num_workers
        recons = aux and self.model.has_reconstruction
        loader = DataLoader(_Crops(items, self.transform, self.max_pixels),
                            batch_size=self.batch_size, num_workers=workers, collate_fn=_collate,
                            pin_memory=self.device.type == "cuda",
                            worker_init_fn=worker_init if workers else None)
        with torch.inference_mode():
            for b in iterate_quietly(loader):
                results = [(i, None, err, None, None) for i, err in b["errors"]]
                if b["image"] is not None:
                    x = b["image"].to(self.device, non_blocking=True)
                    out = self.forward(x, aux=recons)
                    raws = out["prob"].cpu().tolist()
                    probs = raws if self.calibration is None else \
                        self.calibration.probability(out["logit"].cpu().double().numpy()).tolist()
                    for j, i in enumerate(b["index"]):
                        what = items[i] if isinstance(items[i], str) else source or f"image {i}"
                        check_probability(raws[j], what)
                        check_probability(probs[j], what)
                        pair = ((x[j].float().cpu(),
                                 out["recons"][j].float().cpu() if recons else None)
                                if aux else None)
                        results.append((i, probs[j], None, pair, raws[j]))
                yield from sorted(results, key=lambda r: r[0])

    def __call__(self, crops, with_maps=False, source=None):
        """Crops in memory (RGB arrays) of ``source`` (a video's or photo's path, which errors
        name) -> (probabilities, maps, raw probabilities): with ``with_maps`` one list of
        (``MapKind``, map) per crop (``model.heatmap.evidence_maps``: the reconstruction
        difference where the model reconstructs, Grad-CAM where grad-cam is installed), else
        none."""
        probs, pairs, raws = [], [], []
        for _, prob, _, pair, raw in self.stream(crops, aux=with_maps, num_workers=0,
                                                 source=source):
            probs.append(prob)
            raws.append(raw)
            if pair is not None:
                pairs.append(pair)
        if not pairs:
            return probs, [], raws
        xs, recons = zip(*pairs)
        return probs, evidence_maps(self.model, xs, None if recons[0] is None else recons,
                                    self.batch_size), raws


def check_probability(prob, what):
    """A fake probability of ``what`` (a path) that is not a finite number is refused: no verdict
    is made of it. A checkpoint's weights and input spec are checked when it is loaded, so such a
    value comes from the detector itself."""
    if not (isinstance(prob, (int, float)) and math.isfinite(prob)):
        raise UserError(f"the detector gave a non-finite probability ({prob}) for {what}")
    return prob


def prediction(prob, threshold, path="an input"):
    """"fake" at ``threshold`` or above, else "real" (a ``Band``: "uncertain" between its ends);
    None for no probability. A probability that is not finite is a UserError naming ``path``
    (``check_probability``), never a verdict."""
    if prob is None:
        return None
    return as_band(threshold).judge(check_probability(prob, path))


def result_line(path, prob, verdict, fields=()):
    """The output line of one input, exactly as the original's inference prints it::

        path: <path> \t\t| fake probability: 0.1296 \t| prediction: real

    (``verdict``: "fake", "real" or "uncertain"; "no face found" instead of both when ``prob`` is
    None), then
    `` \t| <name>: <value>`` for each of ``fields`` (frames, faces, track of videos and photos)."""
    head = "no face found" if prob is None else \
        f"fake probability: {prob:.4f} \t| prediction: {verdict}"
    return f"path: {path} \t\t| {head}" + "".join(f" \t| {k}: {v}" for k, v in fields)


def crop_record(path, prob, error, threshold, raw=None, source=None, backend="torch",
                precision="fp32"):
    """The ``--output`` row of a face crop (``CROP_COLUMNS``); ``threshold``: a number or a
    ``Band``; ``raw``: its probability before calibration (None: ``prob`` is the raw one)."""
    band = as_band(threshold)
    return {"path": path, "fake_probability": prob,
            "prediction": prediction(prob, band, path),
            "error": error, "raw_probability": prob if raw is None else raw,
            **band_fields(band), **({"threshold_source": source} if source else {}),
            "backend": backend, "precision": precision}
