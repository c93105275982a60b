"""The keyword arguments of the Python API (``faces.api.Predictor``) and what each accepts: one
check for every door, the API's methods and inference.py's flags alike (``check_keywords``).

A light module (no torch): a command line checks its flags with it before any work.
"""
from checks import BACKENDS, CROP_RULES, PRECISIONS, Key, check_argument
from errors import UserError

from .crop import MARGIN
from .finders.base import MIN_FACE_SIZE

# The keywords, each declared once: its default (the methods' signatures say the same: a test
# holds them to it), its kind (checks.check_value: its bounds too; "?": None is accepted, and
# means the default) and what it is. inference.py's flags and the page's form fields are these.
KEYWORDS = {key.path: key for key in (
    # Predictor, Predictor.from_checkpoint
    Key("batch_size", None, "batch_size?", "crops per forward pass (None: 32 on a GPU, 8 on the "
        "CPU)"),
    Key("num_workers", 0, "workers?", "decoding processes for image files"),
    Key("max_pixels", None, "pixels?", "larger images and video frames are refused"),
    Key("graphs", True, "bool", "on a GPU, replay CUDA graphs of the forward"),
    Key("trust", False, "bool", "allow a checkpoint that needs full unpickling"),
    Key("image_size", None, "size?", "the model's input side (None: the checkpoint's)"),
    Key("num_classes", None, (None, 1, 2), "the model's logits (None: the checkpoint's)"),
    Key("backend", "torch", BACKENDS, "what runs the forward"),
    Key("precision", "fp32", PRECISIONS, "the forward's precision"),
    Key("threads", None, "threads?", "intra-op threads of torch and ONNX Runtime"),
    # score_video, score_photo (predict_video, predict_photo)
    Key("frames", None, "frames?", "video: N evenly spaced frames"),
    Key("every", None, "frames?", "video: every N-th frame"),
    Key("all_frames", False, "bool", "video: every frame"),
    Key("margin", MARGIN, "margin", "the crop's side over the face box's longer side"),
    Key("min_face_score", None, "finite?", "the smallest detector score taken for a face (None: "
        "the face detector's own)"),
    Key("min_face_size", MIN_FACE_SIZE, "side", "the smallest face box side, in pixels"),
    Key("crop", None, (None,) + CROP_RULES, "the crop rule (None: the checkpoint's)"),
)}


def check_keywords(**values):
    """Each keyword argument (a key of ``KEYWORDS``) checked against its kind; returns them, as
    the values to use. A bad one is a UserError starting with its name (``UserError.arg``)."""
    return {name: check_argument(name, value, KEYWORDS[name].kind)
            for name, value in values.items()}


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
