"""Command-line tools of the project. Each is a thin command line over the libraries (model,
dataset, faces, trainer, fileio, ...); a tool never imports another tool: what two need lives in a
library."""
