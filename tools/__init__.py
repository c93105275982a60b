"""Command-line tools of the project."""
__version__ = "0.7.0"
