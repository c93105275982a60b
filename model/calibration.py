"""A probability that means what it says: temperature scaling, operating points, calibration
metrics.

A detector's fake probability is ``sigmoid(z)`` of its logit ``z`` (for a two-logit head, the
difference of its logits). Temperature scaling (Guo et al., ICML 2017) divides the logit by one
scalar ``T`` > 0, fitted by minimising the negative log-likelihood of the labels on a validation
split's frames: ``sigmoid(z / T)``. It keeps the order of the scores (AUC, EER and every verdict
at 0.5 are unchanged) and changes how far from 0.5 they lie.

Operating points are thresholds on the calibrated probability chosen on the same frames: the
lowest threshold whose false-positive rate on the real frames is at most 1 %, 5 % and 10 %
(``fpr@0.01`` ...), and the equal-error-rate threshold (``eer``), each with the rates it has there.

A checkpoint keeps its calibration under ``calibration`` (plain numbers and strings, read with
``torch.load(weights_only=True)``): ``Calibration.to_dict`` / ``Calibration.from_dict``.

Calibration metrics are of the fake probability itself (the reliability of the positive class,
what a user reads): ECE over ``ECE_BINS`` equal-width bins of [0, 1] (bin ``k`` holds
``k/15 <= p < (k+1)/15``, the last also p = 1), the bins weighted by their share of frames; the
Brier score (mean squared difference between probability and label); the NLL (mean negative
log-likelihood, from the logits, so that a saturated probability stays finite).
"""
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

from errors import UserError

ECE_BINS = 15
FPR_POINTS = (0.01, 0.05, 0.1)
POINT_NAMES = tuple(f"fpr@{f:g}" for f in FPR_POINTS) + ("eer",)
LOG_T_BOUNDS = (math.log(1e-2), math.log(1e2))  # temperatures from 0.01 to 100
# a fitted log-temperature this close to an end of LOG_T_BOUNDS is that end (the bounded search
# stops within about 1e-5 of it)
BOUND_TOLERANCE = 1e-3


def sigmoid(z):
    """The logistic function in float64, stable for any logit (scipy's expit)."""
    return expit(np.asarray(z, np.float64))


def nll(labels, logits):
    """Mean negative log-likelihood of binary ``labels`` under ``sigmoid(logits)``, computed from
    the logits (softplus(z) - y z): finite however saturated the probability."""
    y = np.asarray(labels, np.float64)
    z = np.asarray(logits, np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def brier(labels, probs):
    y = np.asarray(labels, np.float64)
    p = np.asarray(probs, np.float64)
    return float(np.mean((p - y) ** 2))


def reliability(labels, probs, bins=ECE_BINS):
    """Per equal-width bin of the fake probability: (count, mean probability, fraction fake);
    empty bins have count 0 and NaN means."""
    y = np.asarray(labels, np.float64)
    p = np.asarray(probs, np.float64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, weights=p, minlength=bins) / count
        freq = np.bincount(which, weights=y, minlength=bins) / count
    return count, conf, freq


def ece(labels, probs, bins=ECE_BINS):
    """Expected calibration error of the fake probability: sum over bins of
    (frames in the bin / all frames) * |mean probability - fraction fake|."""
    count, conf, freq = reliability(labels, probs, bins)
    full = count > 0
    return float(np.sum(count[full] / count.sum() * np.abs(conf[full] - freq[full])))


def calibration_metrics(labels, logits, temperature=1.0):
    """ECE, Brier score and NLL of ``sigmoid(logits / temperature)``."""
    z = np.asarray(logits, np.float64) / temperature
    p = sigmoid(z)
    return {"ece": ece(labels, p), "brier": brier(labels, p), "nll": nll(labels, z)}


def fit_temperature(labels, logits):
    """The temperature T minimising the NLL of ``sigmoid(logits / T)`` (searched on log T within
    ``LOG_T_BOUNDS``; the NLL is convex in 1 / T)."""
    y = np.asarray(labels, np.float64)
    z = np.asarray(logits, np.float64)
    from scipy.optimize import minimize_scalar  # here: a process that only scores starts sooner
    res = minimize_scalar(lambda s: nll(y, z * math.exp(-s)), bounds=LOG_T_BOUNDS,
                          method="bounded", options={"xatol": 1e-6})
    return float(math.exp(res.x))


def rates(labels, probs, threshold):
    """(FPR, TPR) of "fake at ``threshold`` or above": the share of real frames called fake and
    of fake frames called fake (NaN for a class with no frame)."""
    y = np.asarray(labels, np.int64)
    fake = np.asarray(probs, np.float64) >= threshold
    fpr = float(fake[y == 0].mean()) if (y == 0).any() else math.nan
    tpr = float(fake[y == 1].mean()) if (y == 1).any() else math.nan
    return fpr, tpr


def fpr_threshold(labels, probs, target):
    """The lowest threshold at which at most ``target`` of the real frames score at or above it:
    k = floor(target * real frames) of them may be called fake, so the threshold lies just above
    the (k + 1)-th highest real score (ties never let more through). Real frames at exactly 1.0
    beyond those k leave the threshold at 1.0, where its measured rate says so."""
    y = np.asarray(labels, np.int64)
    real = np.sort(np.asarray(probs, np.float64)[y == 0])[::-1]
    k = int(math.floor(target * len(real) + 1e-9))
    if k >= len(real):
        return 0.0
    return float(min(np.nextafter(real[k], np.inf), 1.0))


CONFIDENCE = 0.95  # of the Clopper-Pearson interval around each point's rates


def clopper_pearson(k, n, confidence=CONFIDENCE):
    """The exact (Clopper-Pearson) two-sided interval of a rate of ``k`` in ``n``: (lower, upper),
    each end at (1 - confidence) / 2; (0, 1) for no sample."""
    from scipy.stats import beta
    if n <= 0:
        return 0.0, 1.0
    a = (1 - confidence) / 2
    lower = 0.0 if k <= 0 else float(beta.ppf(a, k, n - k + 1))
    upper = 1.0 if k >= n else float(beta.ppf(1 - a, k + 1, n - k))
    return lower, upper


def point_at(labels, probs, threshold):
    """An operating point: its threshold, its rates on ``labels`` / ``probs``, how many real and
    fake samples they rest on, the 95 % upper bound of its FPR and lower bound of its TPR."""
    y = np.asarray(labels, np.int64)
    fake = np.asarray(probs, np.float64) >= threshold
    real_n, fake_n = int((y == 0).sum()), int((y == 1).sum())
    fp, tp = int(fake[y == 0].sum()), int(fake[y == 1].sum())
    fpr, tpr = rates(y, probs, threshold)
    return {"threshold": float(threshold), "fpr": fpr, "tpr": tpr, "real": real_n,
            "fake": fake_n, "fpr_upper": clopper_pearson(fp, real_n)[1],
            "tpr_lower": clopper_pearson(tp, fake_n)[0]}


def choose_points(labels, probs):
    """The operating points (``POINT_NAMES``) chosen on ``labels`` / ``probs``, each ``point_at``.
    """
    points = {}
    for target, name in zip(FPR_POINTS, POINT_NAMES):
        points[name] = point_at(labels, probs, fpr_threshold(labels, probs, target))
    points["eer"] = point_at(labels, probs, eer_threshold(labels, probs))
    return points


def supported(name, point):
    """Whether the validation data supports a point: for ``fpr@x``, the 95 % upper bound of its
    FPR is at most twice x (None where the point holds no bound: calibrated before bounds were
    kept); the ``eer`` point promises no rate and is always supported."""
    if not name.startswith("fpr@"):
        return True
    if point.get("fpr_upper") is None:
        return None
    return point["fpr_upper"] <= 2 * float(name[4:])


def needed_real(target, confidence=CONFIDENCE):
    """The fewest real samples with which a point of FPR ``target`` can be supported: n where
    even no false positive leaves the 95 % upper bound at most twice the target."""
    n = 1
    while clopper_pearson(0, n, confidence)[1] > 2 * target:
        n += 1
    return n


def video_scores(labels, probs, videos):
    """Per video (in first-seen order): its label and the mean of its frames' probabilities, as a
    video's verdict averages (``faces.media``)."""
    order, sums, counts, label = [], {}, {}, {}
    for y, p, v in zip(np.asarray(labels).tolist(), np.asarray(probs, np.float64).tolist(),
                       list(videos)):
        if v not in sums:
            order.append(v)
            sums[v], counts[v], label[v] = 0.0, 0, int(y)
        sums[v] += p
        counts[v] += 1
    return (np.array([label[v] for v in order], np.int64),
            np.array([sums[v] / counts[v] for v in order], np.float64))


def prob_metrics(labels, probs):
    """ECE, Brier and NLL of probabilities (the NLL from clipped probabilities: a video's mean
    has no logit of its own)."""
    y = np.asarray(labels, np.float64)
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1 - 1e-12)
    return {"ece": ece(y, p), "brier": brier(y, p),
            "nll": float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))}


def fit_video(labels, logits, videos, temperature):
    """The video level of a calibration: the validation videos scored as a video's verdict scores
    them (the mean of the calibrated frame probabilities) and the operating points chosen on
    them, with their metrics raw and calibrated; None with the reason where the videos cannot
    carry points (a class without a video, TPR 0 at every point)."""
    z = np.asarray(logits, np.float64)
    vy, vp = video_scores(labels, sigmoid(z / temperature), videos)
    _, raw = video_scores(labels, sigmoid(z), videos)
    missing = [name for c, name in ((0, "real"), (1, "fake")) if not (vy == c).any()]
    if missing:
        return None, f"the validation videos have no {missing[0]} one"
    points = choose_points(vy, vp)
    if all(point["tpr"] == 0 for point in points.values()):
        return None, "TPR 0 at every video-level point"
    return {"videos": int(len(vy)), "real": int((vy == 0).sum()), "fake": int((vy == 1).sum()),
            "points": points, "before": prob_metrics(vy, raw), "after": prob_metrics(vy, vp)}, \
        None


def roc(labels, scores):
    """scikit-learn's ROC with the first threshold as scikit-learn < 1.3 (and so the original)
    had it: the highest score + 1, where newer releases put +inf."""
    from sklearn.metrics import roc_curve  # here: a process that only scores starts sooner
    fpr, tpr, thresholds = roc_curve(labels, scores)
    if len(thresholds) > 1 and np.isinf(thresholds[0]):
        thresholds = thresholds.copy()
        thresholds[0] = thresholds[1] + 1
    return fpr, tpr, thresholds


def eer(labels, scores):
    """Equal error rate and its threshold: 1 - TPR = FPR on the linearly interpolated ROC."""
    fpr, tpr, thresholds = roc(labels, scores)
    from scipy.interpolate import interp1d
    from scipy.optimize import brentq
    rate = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
    return float(rate), float(interp1d(fpr, thresholds)(rate))


def eer_threshold(labels, probs):
    """The threshold of the equal error rate (``eer``, as test.py reports it), within [0, 1]."""
    return float(min(max(eer(labels, probs)[1], 0.0), 1.0))


@dataclass
class Calibration:
    """A temperature, the operating points chosen with it, and what they were fitted on."""

    temperature: float
    points: dict  # name -> {"threshold", "fpr", "tpr"} on the fitted frames
    fitted_on: dict = field(default_factory=dict)  # dataset, branch, frames, real, fake, ...
    before: dict = field(default_factory=dict)  # ece, brier, nll with T = 1
    after: dict = field(default_factory=dict)  # ... with the fitted T
    video: dict | None = None  # the video level (``fit_video``), None: calibrated on frames only

    def point(self, name, level="frame"):
        """(point, level) of the operating point ``name`` at ``level``: a video's verdict takes
        the video-level point, and the frame-level one where the calibration has no video level
        (level "frame" then says so); (None, level) where there is no such point."""
        if level == "video" and self.video is not None:
            return self.video["points"].get(name), "video"
        return self.points.get(name), "frame"
    def probability(self, logit):
        """The calibrated fake probability of a logit (a number or an array)."""
        p = sigmoid(np.asarray(logit, np.float64) / self.temperature)
        return float(p) if np.ndim(p) == 0 else p

    def from_raw(self, prob):
        """The calibrated probability of a raw one (for display where only it is at hand; the
        logit is better where a probability may be saturated)."""
        p = np.clip(np.asarray(prob, np.float64), 1e-12, 1 - 1e-12)
        return self.probability(np.log(p) - np.log1p(-p))

    def describe(self):
        f = self.fitted_on
        where = f"{f.get('dataset', '?')} / {f.get('branch', '?')}, {f.get('frames', '?')} frames"
        return (f"temperature {self.temperature:.4f} (fitted on {where}; ECE "
                f"{self.before['ece']:.4f} -> {self.after['ece']:.4f}, NLL "
                f"{self.before['nll']:.4f} -> {self.after['nll']:.4f})")

    def to_dict(self):
        return {"temperature": float(self.temperature),
                "points": _plain(self.points),
                "fitted_on": dict(self.fitted_on), "before": dict(self.before),
                "after": dict(self.after), "ece_bins": ECE_BINS,
                **({"video": _plain(self.video)} if self.video is not None else {})}

    @classmethod
    def from_dict(cls, d, where="calibration"):
        """A stored calibration, checked against ``STORED`` once, where it is read: a key that is
        missing or of the wrong kind is a UserError naming ``where`` and the key."""
        d = check_stored(d, where)
        return cls(d["temperature"], d["points"], d["fitted_on"], d["before"], d["after"],
                   d.get("video"))


def _plain(value):
    """Numbers as plain floats and ints, for ``torch.load(weights_only=True)``."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value


# The stored calibration (``Calibration.to_dict``): every key that a reader takes (the scorer,
# ``describe``, the threshold's resolution, test.py's report, the page, the reports), with its
# kind (``checks.check_value``). Required unless marked "?"; what a key left out means:
# ``fitted_on`` {} and each of its values "?" where shown; ``points`` may hold any of
# ``POINT_NAMES`` (a name it lacks is refused where a threshold names it); ``brier`` and
# ``ece_bins`` are written for a reader's information, read by none.
POINT_KEYS = {"threshold": "probability", "fpr": "probability", "tpr": "probability",
              "real": "nonneg_int?", "fake": "nonneg_int?", "fpr_upper": "probability?",
              "tpr_lower": "probability?"}
METRIC_KEYS = {"ece": "probability", "nll": "nonneg", "brier": "probability?"}
FITTED_ON_KEYS = {"dataset": "name?", "branch": "name?", "weights": "name?",
                  "frames": "nonneg_int?", "real": "nonneg_int?", "fake": "nonneg_int?",
                  "step": "nonneg_int?"}
STORED = {"temperature": "positive", "points": POINT_KEYS, "before": METRIC_KEYS,
          "after": METRIC_KEYS, "fitted_on": FITTED_ON_KEYS, "ece_bins": "posint?",
          "video": "the video level (``fit_video``), optional"}
OPTIONAL = ("fitted_on", "ece_bins", "video")
VIDEO_KEYS = {"videos": "posint", "real": "nonneg_int", "fake": "nonneg_int"}


def _mapping(value, where):
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a mapping, got {value!r:.80}")
    return value


def _values(d, keys, where):
    """The values of the mapping ``d`` for ``keys`` (key -> kind), each checked; a required one
    missing is a UserError naming it; keys outside ``keys`` are kept unchecked."""
    from checks import check_value
    out = dict(d)
    for key, kind in keys.items():
        if d.get(key) is None:
            if not kind.endswith("?"):
                raise UserError(f"{where}.{key}: missing (required: "
                                f"{', '.join(k for k, v in keys.items() if not v.endswith('?'))})")
            out.pop(key, None)
            continue
        out[key] = check_value(f"{where}.{key}", d[key], kind, text_numbers=False)
    return out


def check_stored(d, where="calibration"):
    """A stored calibration (``STORED``) checked: its values as they are to be used, or a
    UserError naming ``where`` and the first key that is missing or wrong."""
    _mapping(d, where)
    missing = [k for k in STORED if k not in OPTIONAL and d.get(k) is None]
    if missing:
        raise UserError(f"{where}.{missing[0]}: missing (a calibration holds temperature, points, "
                        "before and after; tools/calibrate.py writes one)")
    t = d["temperature"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise UserError(f"{where}.temperature: expected a positive finite number, got {t!r:.80}")
    out = {"temperature": float(t)}
    points = _mapping(d["points"], f"{where}.points")
    out["points"] = _points(points, f"{where}.points")
    for key in ("before", "after"):
        at = f"{where}.{key}"
        out[key] = _values(_mapping(d[key], at), METRIC_KEYS, at)
    fitted = d.get("fitted_on")
    out["fitted_on"] = {} if fitted is None else \
        _values(_mapping(fitted, f"{where}.fitted_on"), FITTED_ON_KEYS, f"{where}.fitted_on")
    if d.get("ece_bins") is not None:
        _values(d, {"ece_bins": "posint"}, where)
    if d.get("video") is not None:
        at = f"{where}.video"
        video = _values(_mapping(d["video"], at), VIDEO_KEYS, at)
        for key in ("points", "before", "after"):
            if video.get(key) is None:
                raise UserError(f"{at}.{key}: missing (a video level holds videos, real, fake, "
                                "points, before and after)")
        out["video"] = {**{k: video[k] for k in VIDEO_KEYS},
                        "points": _points(_mapping(video["points"], f"{at}.points"),
                                          f"{at}.points"),
                        **{k: _values(_mapping(video[k], f"{at}.{k}"), METRIC_KEYS, f"{at}.{k}")
                           for k in ("before", "after")}}
    return out


def _points(points, where):
    out = {}
    for name, point in points.items():
        if name not in POINT_NAMES:
            raise UserError(f"{where}: unknown operating point {name!r} (known: "
                            f"{', '.join(POINT_NAMES)})")
        at = f"{where}.{name}"
        out[name] = {k: (int(v) if k in ("real", "fake") else float(v)) for k, v in
                     _values(_mapping(point, at), POINT_KEYS, at).items() if k in POINT_KEYS}
    return out


def check_temperature(t):
    """A fitted temperature strictly inside the search (``LOG_T_BOUNDS``); one at either end is
    no minimum of the NLL but the end of the search, a UserError saying what the scores do."""
    low, high = LOG_T_BOUNDS
    s = math.log(t)
    if s - low < BOUND_TOLERANCE:
        raise UserError(f"calibration: the fitted temperature {t:.6g} is the search's lower "
                        f"bound ({math.exp(low):g}): the scores separate the classes (nearly) "
                        "perfectly, and the NLL keeps falling as the temperature shrinks")
    if high - s < BOUND_TOLERANCE:
        raise UserError(f"calibration: the fitted temperature {t:.6g} is the search's upper "
                        f"bound ({math.exp(high):g}): the NLL keeps falling as the temperature "
                        "grows, so the scores tell the classes apart no better than 0.5 for every "
                        "frame")
    return t


def fit(labels, logits, fitted_on=None, videos=None):
    """A ``Calibration`` of the frames' ``labels`` (0 real, 1 fake) and raw ``logits``. A fit
    that would mean nothing is refused, a UserError saying why: a class missing, logits without
    spread (all equal), a temperature at the end of the search (``check_temperature``), or
    operating points of which none calls a fake frame fake (TPR 0 at each). With ``videos`` (each
    frame's video), the video level too (``fit_video``; where it cannot be fitted, the
    calibration has none and ``fitted_on["video_level"]`` says why)."""
    y = np.asarray(labels, np.int64)
    z = np.asarray(logits, np.float64)
    if len(y) != len(z) or not len(y):
        raise UserError(f"calibration needs scored frames ({len(y)} labels, {len(z)} logits)")
    if not np.isfinite(z).all():
        raise UserError("calibration: a logit is not a finite number")
    missing = [name for c, name in ((0, "real"), (1, "fake")) if not (y == c).any()]
    if missing:
        raise UserError(f"calibration needs real and fake frames: the frames have no "
                        f"{missing[0]} one")
    if np.ptp(z) == 0:
        raise UserError(f"calibration: the {len(z)} frames' logits are all equal ({z[0]:.6g}): "
                        "scores without spread fit no temperature")
    t = fit_temperature(y, z)
    check_temperature(t)
    p = sigmoid(z / t)
    points = choose_points(y, p)
    if all(point["tpr"] == 0 for point in points.values()):
        raise UserError(f"calibration: TPR 0 at every operating point ({', '.join(points)}): "
                        "no threshold chosen on these frames calls a fake frame fake")
    info = {"frames": int(len(y)), "real": int((y == 0).sum()), "fake": int((y == 1).sum()),
            **(fitted_on or {})}
    video = None
    if videos is not None:
        if len(videos) != len(y):
            raise UserError(f"calibration: {len(videos)} video ids for {len(y)} frames")
        video, why = fit_video(y, z, videos, t)
        if why:
            info["video_level"] = f"none: {why}"
    return Calibration(t, points, info, calibration_metrics(y, z), calibration_metrics(y, z, t),
                       video)


def parse_threshold(value, where="threshold", points=None, typed=False):
    """The one reading of a threshold as a user gives it (inference.py's and test.py's
    ``--threshold``, the API's ``threshold``, the page's form field and its workers), checked
    before any checkpoint is read: None, a probability in [0, 1] (text that reads as one too) as
    a float, an operating point's name (any case, spaces around) as that name, or two of these
    as text ``a:b`` or a pair (an uncertain band: ``eer:fpr@0.01``, ``0.3:0.7``) as a tuple; what
    it returns it takes back unchanged. The names are ``points`` (the operating points a
    checkpoint has; None: any of ``POINT_NAMES``). A wrong one is a UserError starting with
    ``where`` and the value, its ``arg``: the value as Python writes it, or where it was
    ``typed`` (a flag, a form field) a number as typed (``--threshold 1.5``)."""
    if isinstance(value, tuple) or (isinstance(value, str) and ":" in value):
        parts = value if isinstance(value, tuple) else value.split(":")
        if len(parts) != 2 or not all(str(p).strip() for p in parts):
            raise UserError(f"{where} {_shown(value, typed)}: a band is two thresholds a:b "
                            f"(numbers in [0, 1] or operating points: {', '.join(POINT_NAMES)})",
                            arg=where)
        return tuple(_parse_one(p, where, value, points, typed) for p in parts)
    return _parse_one(value, where, value, points, typed)


def _shown(given, typed=False):
    """A threshold as its messages show it: a band as ``a:b``, where ``typed`` text that reads
    as a number as typed (``1.5``), else as Python writes it."""
    if isinstance(given, tuple):
        given = ":".join(str(p) for p in given)
    if isinstance(given, str) and typed:
        try:
            float(given)
        except ValueError:
            return repr(given)
        return given.strip()
    return repr(given)


def _parse_one(value, where, given, points=None, typed=False):
    known = POINT_NAMES if points is None else tuple(points)
    if value is None:
        return None
    if isinstance(value, str):
        name = value.strip().lower()
        try:
            number = float(name)
        except ValueError:
            if name not in known:
                said = ", ".join(known) or "none: the checkpoint has no calibration"
                raise UserError(f"{where} {_shown(given, typed)}: expected a probability in "
                                f"[0, 1] or an operating point ({said}), or two of them as a "
                                "band a:b",
                                arg=where) from None
            return name
    elif isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise UserError(f"{where} {given!r:.80}: expected a probability in [0, 1] or an operating "
                        f"point ({', '.join(POINT_NAMES)}), got {type(value).__name__}",
                        arg=where)
    else:
        number = float(value)
    if not 0 <= number <= 1:  # NaN and the infinities too
        raise UserError(f"{where} {_shown(given, typed)}: expected a probability in [0, 1]",
                        arg=where)
    return number


@dataclass
class Band:
    """What a probability is judged by: fake at ``upper`` or above, real below ``lower``,
    ``uncertain`` between (one threshold: ``lower == upper``, never uncertain). ``source``: where
    it came from (default, given, a point's name, two of them as ``a:b``); ``level``: the level
    of the points it came from (``frame`` or ``video``; a number's: the level it judges);
    ``points``: [(name, point)] of the named ones; ``note``: said once where it is used (a
    video judged by a frame-level point, a point the validation data does not support)."""
    lower: float
    upper: float
    source: str
    level: str = "frame"
    points: list = field(default_factory=list)
    note: str | None = None

    def judge(self, prob):
        if prob is None:
            return None
        return "fake" if prob >= self.upper else "real" if prob < self.lower else "uncertain"

    @property
    def fpr_upper(self):
        """The 95 % upper bound of the validation FPR of the point deciding "fake" (None where
        the threshold is no stored point or the point holds no bound)."""
        for name, point in self.points:
            if point.get("threshold") == self.upper:
                return point.get("fpr_upper")
        return None

    @property
    def supported(self):
        said = [supported(name, point) for name, point in self.points]
        return None if not said or None in said else all(said)


def resolve_band(value, calibration, level="frame", where="threshold"):
    """The ``Band`` of a threshold as a user gives it (``parse_threshold``) for a verdict at
    ``level`` (``frame``: a crop or a photo; ``video``: a video's mean): None is 0.5; a number is
    itself; a point's name takes the calibration's point of that level (the frame-level one where
    it has no video level, said in ``note``), which needs a calibration. A wrong one is a
    UserError naming ``where``."""
    chosen = parse_threshold(value, where)
    if chosen is None:
        return Band(0.5, 0.5, "default", level)
    value = ":".join(str(p) for p in value) if isinstance(value, tuple) else value
    parts = chosen if isinstance(chosen, tuple) else (chosen,)
    values, points, levels, notes = [], [], set(), []
    for part in parts:
        if isinstance(part, float):
            values.append(part)
            levels.add(level)
            continue
        if calibration is None:
            raise UserError(f"{where} {value}: the checkpoint has no calibration, so no operating "
                            "points (python tools/calibrate.py makes them; or give a number)",
                            arg=where)
        point, at = calibration.point(part, level)
        if point is None:
            have = calibration.video["points"] if at == "video" else calibration.points
            raise UserError(f"{where} {value}: the checkpoint's calibration has no {at}-level "
                            f"operating point {part} (it has {', '.join(have) or 'none'})",
                            arg=where)
        values.append(float(point["threshold"]))
        points.append((part, point))
        levels.add(at)
        if at != level:
            notes.append(f"{part} is a frame-level point (the checkpoint's calibration has no "
                         "video level: python tools/calibrate.py makes one); a video is judged "
                         "by it")
        if supported(part, point) is False:
            notes.append(f"{part} is not supported by the validation data: its FPR "
                         f"{point['fpr']:.4f} rests on {point.get('real', '?')} real samples, "
                         f"95 % upper bound {point['fpr_upper']:.4f} (over twice "
                         f"{part[4:]})")
    source = ":".join(str(p) if not isinstance(p, float) else "given" for p in parts)
    if all(isinstance(p, float) for p in parts):
        source = "given"
    return Band(min(values), max(values), source, "frame" if "frame" in levels else level,
                points, "; ".join(notes) or None)


def resolve_threshold(value, calibration, where="threshold"):
    """``(threshold, source)`` at the frame level: the ``Band``'s fake threshold and source
    (``resolve_band``)."""
    band = resolve_band(value, calibration, "frame", where)
    return band.upper, band.source
