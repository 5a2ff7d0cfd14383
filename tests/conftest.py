import os
import random

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    random.seed(0)
    # two threads, or what OMP_NUM_THREADS says: with another job on the machine, PyTorch's
    # spinning worker threads stall 5 to 10x (run the suite with OMP_NUM_THREADS=1 then)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))


def randomize_bn(model, input_shape, steps: int = 3):
    """Give BatchNorm layers non-trivial running statistics, so eval-mode equivalence
    tests exercise the statistics slices too."""
    model.train()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
            elif isinstance(m, torch.nn.Linear):
                m.weight.normal_(0, 0.1)
        for _ in range(steps):
            model(torch.randn(input_shape) * 2 + 0.5)
    model.eval()
