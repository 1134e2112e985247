"""Every test runs on one CPU thread: results are then bit-for-bit repeatable."""

import torch

torch.set_num_threads(1)
