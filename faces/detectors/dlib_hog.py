"""Renamed ``faces.finders.dlib_hog``; ``DlibDetector`` is ``DlibFinder``. Kept one release
(importing it warns through ``faces.detectors``)."""
from faces.finders.dlib_hog import DlibFinder

DlibDetector = DlibFinder

__all__ = ["DlibDetector", "DlibFinder"]
