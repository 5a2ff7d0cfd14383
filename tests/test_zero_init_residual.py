"""Residual branches start at zero: the right BatchNorms (torchvision's own choice as the
reference), each block then the identity, and `train` doing it for supernets only."""
import pytest
import torch
import torchvision

from autoslim_hw import slimmable
from autoslim_hw.models import create_model
from autoslim_hw.nn.init import residual_branch_norms, zero_init_residual


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_the_norms_are_those_torchvision_zeroes_in_resnets(arch):
    reference = getattr(torchvision.models, arch)(zero_init_residual=True)
    expected = [n for n, m in reference.named_modules()
                if isinstance(m, torch.nn.BatchNorm2d) and not m.weight.detach().any()]
    assert len(expected) == {"resnet18": 8, "resnet50": 16}[arch]  # one per residual block
    supernet = slimmable(getattr(torchvision.models, arch)(), input_size=64)
    assert residual_branch_norms(supernet.trace()) == expected


def test_mobilenet_v2_zeroes_the_last_norm_of_each_block_with_a_skip():
    from torchvision.models.mobilenetv2 import InvertedResidual

    supernet = create_model("mobilenet_v2_cifar", input_size=32, num_classes=10)
    expected = [f"{n}.conv.{len(m.conv) - 1}" for n, m in supernet.net.named_modules()
                if isinstance(m, InvertedResidual) and m.use_res_connect]
    assert len(expected) == 10  # MobileNetV2's 17 blocks, 10 with a skip (Sandler et al., Table 2)
    assert zero_init_residual(supernet) == expected


@pytest.mark.parametrize("arch", ["mobilenet_v1", "shufflenet_v2_x1_0"])
def test_networks_without_residual_adds_are_left_alone(arch):
    supernet = create_model(arch, input_size=64, num_classes=10)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    assert zero_init_residual(supernet) == []
    assert all(torch.equal(before[k], v) for k, v in supernet.state_dict().items())


def test_every_residual_block_starts_as_the_identity_at_any_width():
    import random

    from torchvision.models.mobilenetv2 import InvertedResidual

    supernet = create_model("mobilenet_v2_cifar", input_size=32, num_classes=10)
    zero_init_residual(supernet)
    supernet.eval()
    supernet.set_config(supernet.space.sample(random.Random(3)))
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(torch.equal(i[0], o)))
             for m in supernet.net.modules() if isinstance(m, InvertedResidual) and m.use_res_connect]
    with torch.no_grad():
        supernet(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert seen == [True] * 10


def test_train_zero_inits_supernets_only_when_asked(tmp_path):
    from test_train import TINY

    from autoslim_hw.checkpoint import load_checkpoint
    from autoslim_hw.train import TrainSettings, train

    names = residual_branch_norms(create_model("mobilenet_v2_cifar", input_size=16, num_classes=10,
                                               in_chans=1, width_mult=0.35).trace())
    scales = {}
    for flag in (True, False):
        train(TrainSettings(**TINY, zero_init_residual=flag), tmp_path / str(flag), progress=False,
              stop_after_steps=1)
        state = load_checkpoint(tmp_path / str(flag) / "supernet.pt")["model"]
        scales[flag] = max(state[f"net.{n}.weight"].abs().max().item() for n in names)
    # one warm-up step at lr ~0.005 moves a scale by far less than 0.1 from where it started
    assert scales[True] < 0.1 and scales[False] > 0.9
