"""The face pipeline, a library used by tools/extract_faces.py and inference.py alike.

- ``faces.finders``: face finders by name (dlib, RetinaFace) behind ``finder(rgb) ->
  [Detection]``;
- ``faces.video``: which videos and frames, decoded one at a time;
- ``faces.crop``: the crop of the training data (square, margin, clipped) and the face followed
  across frames;
- ``faces.rules``: the named crop rules (deepfakebench, ffpp, recce, box), each its reference's
  detector, face, geometry, frames and drop rule; ``faces.landmarks``: dlib's shape predictor;
- ``faces.tracking``: faces linked into tracks;
- ``faces.manifest``: crop manifests, written beside the crops and read back to re-crop;
- ``faces.extract``: face crops from videos into the dataset loaders' folders (extract, recrop);
- ``faces.scoring``: face crops -> fake probabilities (the one crop scorer), the output line;
- ``faces.media``: videos and photos scored by a detector (tracks, verdicts, outputs, pictures);
- ``faces.api``: ``Predictor``, the Python API (``from faces import Predictor``).
"""
__all__ = ["Predictor"]


def __getattr__(name):
    # ``faces.Predictor`` imports faces.api (torch, the models, matplotlib) when it is asked for,
    # not when a light part such as faces.video or faces.crop is imported
    if name == "Predictor":
        from .api import Predictor
        return Predictor
    raise AttributeError(f"module 'faces' has no attribute {name!r}")
