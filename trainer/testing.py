"""Deprecated name of trainer/evaluation_report.py (test.py's evaluation report), kept for one
release: importing it warns, and gives that module itself."""
import sys
import warnings

from . import evaluation_report

warnings.warn("trainer.testing is renamed trainer.evaluation_report; the old name goes in the "
              "next release", DeprecationWarning, stacklevel=2)
sys.modules[__name__] = evaluation_report
