"""Training keeps freed memory for reuse: a step no longer faults in and zeroes fresh pages."""

import platform
import subprocess
import sys

import pytest

# Minor page faults per training step of the compact CNN (batch 128, one thread), in a fresh
# process; with `train` first, a one-epoch run on 200 images, which sets the allocator up.
SCRIPT = """
import resource, sys, torch, torch.nn.functional as F
from mnist_lab.config import TrainConfig
from mnist_lab.data import load
from mnist_lab.models import create_model
from mnist_lab.train import train
if sys.argv[1] == "train":
    train(TrainConfig(epochs=1, subset=200, test_subset=200, threads=1),
          load("mnist", sys.argv[2], download=False))
torch.set_num_threads(1)
model = create_model("compact_step3").to(memory_format=torch.channels_last)
x = torch.randn(128, 1, 28, 28).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (128,))
def step():
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _faults_per_step(first: str, data_root) -> float:
    out = subprocess.run([sys.executable, "-c", SCRIPT, first, str(data_root)],
                         capture_output=True, text=True, check=True, timeout=300)
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_after_training_a_step_reuses_freed_memory(data_root):
    # without: glibc maps each large activation afresh and unmaps it on free (~3,700 faults,
    # 15 MB zeroed a step); after train() has set the allocator up, freed blocks are reused
    assert _faults_per_step("alone", data_root) > 1000
    assert _faults_per_step("train", data_root) < 300
