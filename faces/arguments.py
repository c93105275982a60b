"""The keyword arguments of the Python API (``faces.api.Predictor``) and what each accepts: one
check for every door, the API's methods and inference.py's flags alike (``check_keywords``).

A light module (no torch): a command line checks its flags with it before any work.
"""
from checks import BACKENDS, CROP_RULES, PRECISIONS, check_argument
from errors import UserError

# keyword -> its kind (checks.check_value); "?": None is accepted, and means the default
KINDS = {
    # Predictor, Predictor.from_checkpoint
    "batch_size": "batch_size?", "num_workers": "workers?", "max_pixels": "pixels?",
    "graphs": "bool", "trust": "bool", "image_size": "size?", "num_classes": (None, 1, 2),
    "backend": BACKENDS, "precision": PRECISIONS,
    "threads": "threads?",
    # score_video, score_photo (predict_video, predict_photo)
    "frames": "frames?", "every": "frames?", "all_frames": "bool", "margin": "margin",
    "min_face_score": "finite?", "min_face_size": "side",
    "crop": (None,) + CROP_RULES,
}


def check_keywords(**values):
    """Each keyword argument (a key of ``KINDS``) checked against its kind; returns them, as the
    values to use. A bad one is a UserError starting with its name (``UserError.arg``)."""
    return {name: check_argument(name, value, KINDS[name]) for name, value in values.items()}


def frame_choice(frames=None, every=None, all_frames=False):
    """Which frames of a video: ``(frames, every)`` for ``faces.video.iter_frames``, from the
    three keywords that choose them, of which at most one is given (``frames`` N evenly spaced,
    ``FRAMES`` when none is; ``every`` k-th; ``all_frames``)."""
    from .video import FRAMES
    given = [name for name, value in (("frames", frames), ("every", every),
                                      ("all_frames", all_frames)) if value not in (None, False)]
    if len(given) > 1:
        raise UserError(f"{given[0]} and {given[1]} both choose the frames of a video: give one "
                        "of frames, every and all_frames", arg=given[0])
    if all_frames:
        return None, None
    if every is not None:
        return None, every
    return (FRAMES if frames is None else frames), None
