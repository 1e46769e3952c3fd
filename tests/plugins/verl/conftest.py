"""verl plugin tests: verl 0.9.1 itself on CPU; the CUDA part (verl's worker group) is played by verl_standin."""

from __future__ import annotations

import os

import torch

# Keep verl's auto-loaded plugins and Ray's telemetry out of the tests; one torch thread on 2 shared cores.
os.environ.setdefault("VERL_USE_EXTERNAL_PLUGINS", "none")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
torch.set_num_threads(1)
