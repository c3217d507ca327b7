import pytest
import torch

from kit import config as C


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)  # the CI machine has 2 cores; keeps timings of the suite predictable


@pytest.fixture
def smoke_cfg():
    """The smoke prior config: a ResNet-8 of width 8 on 1,200 Fashion-MNIST images."""
    return C.build(C.PriorConfig, "smoke")
