"""Measurements: the tables ``tools/benchmark.py`` prints (one module per sub-command) and the GPU
tables of ``tools/gpu_check.py --bench``. Printed tables, never timed unit tests; each benchmark
returns its figures as a flat dict (``tools/benchmark.py ... --figures FILE`` records them). They
use the libraries (model, dataset, faces, trainer, ...); no library imports them."""
