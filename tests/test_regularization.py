import pytest
import torch
from torch import nn

from lit_cifar.regularization import l1_penalty, l2_penalty, penalized_weights, penalty


@pytest.fixture
def tiny_net():
    net = nn.Sequential(nn.Linear(2, 2), nn.Conv2d(1, 1, kernel_size=1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
        net[0].bias.fill_(100.0)  # biases are not penalised: a huge one must change nothing
        net[1].weight.fill_(-3.0)
        net[1].bias.fill_(-7.0)
    return net


def test_only_weights_are_penalized(tiny_net):
    assert [tuple(w.shape) for w in penalized_weights(tiny_net)] == [(2, 2), (1, 1, 1, 1)]


def test_penalties_match_a_hand_computation(tiny_net):
    weights = penalized_weights(tiny_net)
    l1 = 1 + 2 + 0.5 + 0 + 3  # 6.5
    l2 = 1 + 4 + 0.25 + 0 + 9  # 14.25
    assert l1_penalty(weights).item() == l1
    assert l2_penalty(weights).item() == l2
    assert penalty(weights, "none", 0.1) is None
    assert penalty(weights, "l1", 0.1).item() == pytest.approx(0.1 * l1)
    assert penalty(weights, "l2", 0.1).item() == pytest.approx(0.1 * l2)
    assert penalty(weights, "elastic_net", 0.1, l1_ratio=0.25).item() == pytest.approx(0.1 * (0.25 * l1 + 0.75 * l2))


def test_penalty_gradients_are_sign_for_l1_and_twice_the_weight_for_l2(tiny_net):
    weights = penalized_weights(tiny_net)
    penalty(weights, "l2", 1.0).backward()
    assert torch.equal(weights[0].grad, 2 * weights[0].detach())
    assert tiny_net[0].bias.grad is None
    weights[0].grad = None
    penalty(weights, "l1", 1.0).backward()
    assert torch.equal(weights[0].grad, weights[0].detach().sign())
