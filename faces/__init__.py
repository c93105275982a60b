"""The face pipeline, a library used by tools/extract_faces.py and inference.py alike.

- ``faces.detectors``: face detectors by name (dlib, RetinaFace) behind ``detector(rgb) ->
  [Detection]``;
- ``faces.video``: which videos and frames, decoded one at a time;
- ``faces.crop``: the crop of the training data (square, margin, clipped) and the face followed
  across frames;
- ``faces.tracking``: faces linked into tracks;
- ``faces.manifest``: crop manifests, written beside the crops and read back to re-crop;
- ``faces.media``: videos and photos scored by a detector (tracks, verdicts, outputs, pictures).
"""
