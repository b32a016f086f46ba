"""MuonWithSGD: which parameters get Muon, its step against torch's own Muon, the others' step against SGD."""

import pytest
import torch
from torch import nn

import lit_cifar.muon
from lit_cifar.muon import MuonWithSGD, orthogonalized
from lit_cifar.networks import AirbenchNet
from lit_cifar.schedules import TriangularLR
from lit_cifar.speedrun import norm_bias_optimizer


def test_filters_get_a_group_of_their_own_after_the_groups_given_and_follow_the_schedule():
    network = AirbenchNet()
    optimizer = norm_bias_optimizer(lambda params: MuonWithSGD(params, lr=0.5, muon_lr=0.2), network, 64.0)
    rest, norms, filters = optimizer.param_groups
    trained_filters = [p for p in network.parameters() if p.ndim == 4 and p.requires_grad]
    assert [id(p) for p in filters["params"]] == [id(p) for p in trained_filters] and filters["muon"]
    assert all(p is not network.whiten.weight for p in filters["params"])  # frozen: not handed to the optimizer
    assert all(p.ndim < 4 for p in rest["params"] + norms["params"]) and not rest["muon"] and not norms["muon"]
    assert (rest["lr"], norms["lr"], filters["lr"]) == (0.5, 32.0, 0.2)
    schedule = TriangularLR(optimizer, total_steps=10, start_factor=0.5)
    assert [group["lr"] for group in optimizer.param_groups] == [0.25, 16.0, 0.1]
    optimizer.step()  # no gradients: changes nothing
    schedule.step()
    assert all(group["lr"] > start for group, start in zip(optimizer.param_groups, (0.25, 16.0, 0.1)))


def test_a_filter_is_renormalised_then_moved_by_the_orthogonalised_nesterov_momentum_as_torchs_muon_does():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, bias=False)
    start = conv.weight.detach().clone()
    optimizer = MuonWithSGD(conv.parameters(), muon_lr=0.1, muon_momentum=0.6, ns_steps=3)
    # torch.optim.Muon (2-D parameters only) on the filter as an 8 x 36 matrix, renormalised as airbench does.
    # Its momentum is an average, (1 - m) times airbench's sum, which the orthogonalisation's normalising undoes.
    reference = nn.Parameter((start * 8**0.5 / start.norm()).reshape(8, 36))
    torch_muon = torch.optim.Muon([reference], lr=0.1, weight_decay=0.0, momentum=0.6, ns_steps=3, adjust_lr_fn="original")
    for _ in range(3):
        gradient = torch.randn_like(start)
        conv.weight.grad = gradient.clone()
        optimizer.step()
        reference.grad = gradient.reshape(8, 36)
        torch_muon.step()
        torch.testing.assert_close(conv.weight.detach().reshape(8, 36), reference.detach(), atol=2e-3, rtol=0)
        with torch.no_grad():
            reference.mul_(8**0.5 / reference.norm())


def test_the_orthogonalised_update_has_singular_values_near_one():
    matrix = torch.randn(64, 576) * torch.logspace(-3, 0, 576)  # ill-conditioned, as gradients are
    singular_values = torch.linalg.svdvals(orthogonalized(matrix, steps=5).float())
    assert singular_values.min() > 0.3 and singular_values.max() < 1.5
    tall = torch.linalg.svdvals(orthogonalized(matrix.T, steps=5).float())
    torch.testing.assert_close(tall, singular_values, atol=0.02, rtol=0)


@pytest.mark.parametrize("bf16_units", [True, False], ids=["bf16 units", "no bf16 units"])
def test_the_orthogonalisation_runs_in_bf16_only_where_the_cpu_has_bf16_units(bf16_units, monkeypatch):
    monkeypatch.setattr(lit_cifar.muon, "has_bf16_units", lambda: bf16_units)
    assert orthogonalized(torch.randn(8, 36), steps=1).dtype == (torch.bfloat16 if bf16_units else torch.float32)


def test_the_other_parameters_step_as_torchs_nesterov_sgd():
    torch.manual_seed(0)
    ours, theirs = nn.Linear(5, 3), nn.Linear(5, 3)
    theirs.load_state_dict(ours.state_dict())
    optimizer = MuonWithSGD(ours.parameters(), lr=0.3, momentum=0.85, weight_decay=0.01)
    sgd = torch.optim.SGD(theirs.parameters(), lr=0.3, momentum=0.85, weight_decay=0.01, nesterov=True)
    for _ in range(4):
        inputs = torch.randn(7, 5)
        for network, opt in ((ours, optimizer), (theirs, sgd)):
            opt.zero_grad()
            network(inputs).square().sum().backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("setting", [{"lr": -1.0}, {"muon_momentum": -0.1}, {"ns_steps": 0}])
def test_impossible_settings_are_refused(setting):
    with pytest.raises(ValueError, match=next(iter(setting))):
        MuonWithSGD(nn.Linear(2, 2).parameters(), **setting)
