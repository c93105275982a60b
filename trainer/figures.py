"""The figures of a run and of test.py (matplotlib, drawn off screen): labelled validation
examples with their reconstruction and difference map, the ROC curves, the reliability
diagram."""
import numpy as np
import torch

from model.detector import HEAT_MAX

from .metrics import roc, video_scores


def examples_figure(shown, norm, calibration=None):
    """Real and fake validation examples, labelled with their probability (calibrated by
    ``calibration`` where given, as inference.py shows it): the input, its
    reconstruction and the difference heat map (``model.heatmap``: one fixed scale for every
    panel, the colours of inference.py's pictures)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    from model.heatmap import difference_map, heat_colours, heat_map
    x, recons, labels, probs = shown
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in norm)

    def to_img(t):
        return (t * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()

    faces, recs = to_img(x), to_img(recons)
    diff = difference_map(x, recons)
    n = len(labels)
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.2), squeeze=False)
    for j in range(n):
        kind = "fake" if int(labels[j]) == 1 else "real"
        p = float(probs[j]) if calibration is None else calibration.from_raw(float(probs[j]))
        axes[0, j].set_title(f"{kind}\np(fake) {p:.2f}" + (" cal." if calibration else ""),
                             fontsize=8)
        for row, img in enumerate((faces[j], recs[j], heat_map(diff[j])[..., ::-1])):
            axes[row, j].imshow(img)
        for row in range(3):
            axes[row, j].set_xticks([])
            axes[row, j].set_yticks([])
    for row, name in enumerate(("input", "reconstruction", "|input - recons.|")):
        axes[row, 0].set_ylabel(name, fontsize=8)
    scale = ScalarMappable(Normalize(0, HEAT_MAX), ListedColormap(heat_colours()))
    fig.colorbar(scale, ax=axes[2, :].tolist(), fraction=0.05, pad=0.02)
    return fig


def roc_figure(labels, probs, videos, metrics, title, video_rule="project"):
    """Frame- and video-level ROC curves, titled, each with its EER point marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    fpr, tpr, _ = roc(labels, probs)
    ax.plot(fpr, tpr, label=f"frame (AUC {metrics['AUC']:.4f})")
    vl, vp, _ = video_scores(labels, probs, videos, video_rule)
    if len(np.unique(vl)) == 2 and "video_AUC" in metrics:
        vf, vt, _ = roc(vl, vp)
        which = " by folder name" if video_rule == "deepfakebench" else ""
        ax.plot(vf, vt, label=f"video{which} (AUC {metrics['video_AUC']:.4f})")
    eer = metrics.get("EER")
    if eer is not None and eer == eer:
        ax.plot([eer], [1 - eer], "o", color="k", ms=6,
                label=f"frame EER {eer:.4f} (false positives = false negatives)")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.plot([0, 1], [1, 0], color="0.8", lw=0.6)  # where the EER points lie
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positive rate (real called fake)")
    ax.set_ylabel("true positive rate (fake called fake)")
    import textwrap
    ax.set_title("\n".join(textwrap.wrap(title, 60)), fontsize=10)  # long dataset paths fit
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def reliability_figure(labels, logits, calibration, title, videos=None):
    """The reliability diagram: fraction fake against mean fake probability per bin, raw and
    (with ``calibration``) calibrated, the diagonal of a perfect calibration, and each bin's
    count in a histogram below; with ``videos``, the same of the videos' probabilities (the mean
    of their frames') beside it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from model.calibration import sigmoid, video_scores
    labels = np.asarray(labels, np.int64)
    logits = np.asarray(logits, np.float64)
    levels = [("frames", labels, sigmoid(logits),
               None if calibration is None else calibration.probability(logits))]
    if videos is not None:
        vy, vraw = video_scores(labels, sigmoid(logits), videos)
        vcal = None if calibration is None else \
            video_scores(labels, calibration.probability(logits), videos)[1]
        levels.append(("videos", vy, vraw, vcal))
    fig, axes = plt.subplots(2, len(levels), figsize=(5 * len(levels), 6.2), dpi=100,
                             sharex=True, gridspec_kw={"height_ratios": [3, 1.2]}, squeeze=False)
    for col, (unit, y, raw, cal) in enumerate(levels):
        curves = [("raw", raw, "C0")]
        if cal is not None:
            curves.append((f"calibrated (T = {calibration.temperature:.3f})", cal, "C1"))
        _reliability_panel(axes[0, col], axes[1, col], y, curves, unit)
    import textwrap
    fig.suptitle("\n".join(textwrap.wrap(f"Reliability: {title}", 60 * len(levels))),
                 fontsize=10)
    fig.tight_layout()
    return fig


def _reliability_panel(ax, hist, labels, curves, unit):
    from model.calibration import ECE_BINS, ece, reliability
    edges = np.linspace(0, 1, ECE_BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    width = 1 / ECE_BINS
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="perfectly calibrated")
    for k, (name, probs, colour) in enumerate(curves):
        count, conf, freq = reliability(labels, probs)
        full = count > 0
        ax.plot(conf[full], freq[full], "o-", color=colour, ms=4,
                label=f"{name}: ECE {ece(labels, probs):.4f}")
        offset = (k - (len(curves) - 1) / 2) * width / len(curves)
        bars = hist.bar(centres + offset, count, width / len(curves), color=colour, alpha=0.8)
        for bar, n in zip(bars, count):
            if n:
                hist.annotate(str(int(n)), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                              ha="center", va="bottom", fontsize=5)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"fraction of fake {unit}")
    ax.set_title(f"{unit} ({len(labels)})", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    hist.set_xlabel(f"fake probability ({ECE_BINS} equal-width bins)")
    hist.set_ylabel(f"{unit} per bin")
