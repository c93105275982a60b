"""Experiments: the paper's tables reproduced (reproduce.py) and the DeeperForensics-1.0 robustness
grid (robustness.py), the work behind tools/reproduce.py and tools/robustness.py. They use the
libraries (model, dataset, faces, trainer, ...); no library imports them."""
