"""mnist-lab: run, compare and explain experiments on MNIST-family digit classification."""

import time

# Taken at first import, which the CLI does before anything else: the "process start" that
# seconds_to_target is measured from (data loading included).
PROCESS_START = time.perf_counter()

__version__ = "0.1.0"
