"""Label super-resolution losses against hand-computed values."""

import math

import pytest
import torch

from napari_omniseg.choices import LsrDistance, LsrLoss
from napari_omniseg.train.lsr import block_statistics, distance, group_statistics, lsr_loss


def test_block_statistics_are_the_mean_and_bernoulli_variance_of_the_mean():
    prob = torch.full((1, 4, 4), 0.5)
    prob[0, :2, :2] = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    mu, var = block_statistics(prob, 2)
    assert mu.shape == var.shape == (1, 2, 2)
    assert mu[0, 0, 0] == pytest.approx(0.75) and var[0, 0, 0] == pytest.approx(0.0)
    # four pixels at 0.5: sum p(1-p) = 1, over |X|^2 = 16
    assert mu[0, 1, 1] == pytest.approx(0.5) and var[0, 1, 1] == pytest.approx(1 / 16)


def test_distances_by_hand():
    mu, var, eta, rho2 = (torch.tensor(v) for v in (0.5, 0.0625, 0.3, 0.01))
    nll = 0.5 * 0.04 / 0.0725 + 0.5 * math.log(0.0725)
    paper = 0.04 * 0.0625 / (0.0725 + 1e-6) ** 2 + math.log(0.0625 + 0.03)
    assert float(distance(mu, var, eta, rho2, LsrDistance.NLL)) == pytest.approx(nll, rel=1e-5)
    assert float(distance(mu, var, eta, rho2, LsrDistance.PAPER)) == pytest.approx(paper,
                                                                                  rel=1e-5)


def test_the_paper_distance_has_a_degenerate_minimum_and_nll_has_not():
    """As the predicted variance goes to 0 the paper's form forgets the mean (digest 3.2)."""
    zero = torch.tensor(0.0)
    eta, rho2 = torch.tensor(0.3), torch.tensor(0.01)
    right = distance(torch.tensor(0.3), zero, eta, rho2, LsrDistance.PAPER)
    wrong = distance(torch.tensor(0.9), zero, eta, rho2, LsrDistance.PAPER)
    assert float(right) == pytest.approx(float(wrong)) == pytest.approx(math.log(0.03))
    assert float(distance(torch.tensor(0.9), zero, eta, rho2, LsrDistance.NLL)) > float(
        distance(torch.tensor(0.3), zero, eta, rho2, LsrDistance.NLL)) + 10


def test_group_statistics_inter_and_law_of_total_variance():
    mu, var = torch.tensor([0.2, 0.4]), torch.tensor([0.01, 0.03])
    m, v = group_statistics(mu, var, LsrLoss.INTER)
    assert float(m) == pytest.approx(0.3) and float(v) == pytest.approx(0.01)
    m, v = group_statistics(mu, var, LsrLoss.INTRA_INTER)
    assert float(m) == pytest.approx(0.3) and float(v) == pytest.approx(0.03)


def test_lsr_loss_groups_same_class_blocks_and_scales_sd_by_alpha():
    mu = torch.tensor([0.2, 0.4, 0.1, 0.3, 0.9])
    var = torch.tensor([0.01, 0.03, 0.0, 0.02, 0.0])
    keys = torch.tensor([7, 7, 7, 7, 8])
    eta = torch.tensor([0.3, 0.3, 0.3, 0.3, 0.8])
    sd = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.2])
    alpha = 0.5

    def nll(m, v, e, s):
        t = v + (alpha * s) ** 2
        return 0.5 * (e - m) ** 2 / t + 0.5 * math.log(t)

    # class 7 in two groups of two (K = 2), class 8 alone
    groups = [nll(0.3, 0.02 + 0.01, 0.3, 0.1), nll(0.2, 0.01 + 0.01, 0.3, 0.1),
              nll(0.9, 0.0, 0.8, 0.2)]
    got = lsr_loss(mu, var, keys, eta, sd, kind=LsrLoss.INTRA_INTER, alpha=alpha, group_size=2)
    assert float(got) == pytest.approx(sum(groups) / 3, rel=1e-5)
    intra = [nll(float(m), float(v), float(e), float(s)) for m, v, e, s in zip(mu, var, eta, sd)]
    got = lsr_loss(mu, var, keys, eta, sd, kind=LsrLoss.INTRA, alpha=alpha)
    assert float(got) == pytest.approx(sum(intra) / 5, rel=1e-5)
