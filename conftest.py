"""Suite-wide settings.

Tiny models run far faster on one thread: on a busy 2-core machine torch's
default of one thread per core was measured 10-100x slower for C=16 ECAPA
models, since the threads wait on each other. Subprocesses (recipes under
torchrun, CLIs) inherit the same setting through OMP_NUM_THREADS.
"""

import os

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)
