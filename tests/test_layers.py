"""Slimmable layers: gradients of a config equal the materialized model's, zero elsewhere."""
import random

import torch
from torch.autograd import gradcheck

from autoslim_hw.nn.materialize import materialize
from autoslim_hw.models import create_model
from autoslim_hw.nn.layers import leading_block


def test_leading_block_gradcheck():
    w = torch.randn(6, 5, 3, 3, dtype=torch.double, requires_grad=True)
    assert gradcheck(lambda t: leading_block(t, 4, 3), (w,))


def test_supernet_gradients_equal_the_plain_subnet_gradients():
    net = create_model("mobilenet_v2_cifar", width_mult=0.35, input_size=16).train()
    cfg = net.space.sample(random.Random(0))
    net.set_config(cfg)
    plain = materialize(net, cfg).train()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    for model in (net, plain):
        torch.manual_seed(1)  # the same dropout mask in both
        torch.nn.functional.cross_entropy(model(x), y).backward()
    sup = dict(net.net.named_parameters())
    for name, p in plain.named_parameters():
        g = sup[name].grad
        block = tuple(slice(0, n) for n in p.shape)
        assert torch.allclose(g[block], p.grad, atol=1e-5), name
        rest = g.clone()
        rest[block] = 0
        assert rest.abs().max() == 0, name  # inactive channels get no gradient
