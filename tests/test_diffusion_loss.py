"""DiffusionLoss: the DM term, the ordinal term and every option of docs/method.md."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from odmaug.config import DiffusionConfig, GeneratorConfig, OrdinalConfig
from odmaug.diffusion import ClassPool, DiffusionLoss, NoiseSchedule, build_generator, ordinal_term, pair_distance


class TableModel(nn.Module):
    """eps = table[label] (a fixed vector per label), recording every call's inputs."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table.clone())
        self.num_classes = table.shape[0] - 1
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x, t, labels):
        self.calls.append((x.detach().clone(), t.clone(), labels.clone()))
        return self.table[labels] + 0.0 * x


def cfg(gamma=1.0, p_uncond=0.0, timesteps=100, **ordinal) -> DiffusionConfig:
    return DiffusionConfig(timesteps=timesteps, p_uncond=p_uncond, ordinal=OrdinalConfig(gamma=gamma, **ordinal))


def table_from(points: list[list[float]], shape=(3, 4, 4)) -> torch.Tensor:
    """Label c's eps: points[c] (a 2-D point) embedded in the first two elements, zero elsewhere."""
    n = math.prod(shape)
    out = torch.zeros(len(points), n)
    out[:, :2] = torch.tensor(points, dtype=torch.float32)
    return out.view(len(points), *shape)


def run_loss(loss_fn, model, batch=12, num_classes=5, seed=0, size=4, labels=None, pool=None):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    if labels is None:
        labels = torch.arange(batch) % num_classes
    schedule = NoiseSchedule.from_config(loss_fn.cfg)
    return loss_fn(model, x0, labels, schedule, g, pool), x0, labels, schedule


# ---------------------------------------------------------------- distances and the ordinal term
def test_pair_distance_is_per_element():
    zeros = torch.zeros(1, 3, 4, 4)
    assert torch.allclose(pair_distance(zeros + 1, zeros, "l2"), torch.tensor([1.0]))
    assert torch.allclose(pair_distance(zeros + 2, zeros, "l2"), torch.tensor([2.0]))
    assert torch.allclose(pair_distance(zeros + 2, zeros, "squared"), torch.tensor([4.0]))
    big = torch.zeros(1, 3, 16, 16)  # same per-element difference at another resolution: same distance
    assert torch.allclose(pair_distance(big + 2, big, "l2"), torch.tensor([2.0]))


def _term(points, distance="l2", spacing="none", triplet=(0, 1, 2)):
    e = table_from(points)
    return ordinal_term(e[0:1], e[1:2], e[2:3], torch.tensor([triplet]), distance, spacing).item()


def test_ordinal_term_zero_when_collinear_and_ordered_positive_otherwise():
    assert _term([[0, 0], [1, 1], [3, 3]]) == pytest.approx(0.0, abs=1e-12)  # ordered on a line
    assert _term([[0, 0], [3, 3], [1, 1]]) > 1e-3  # order broken (q beyond r)
    assert _term([[0, 0], [1, 1], [2, 0]]) > 1e-3  # bent
    # the gradient at coinciding estimates is finite (norm gradient defined as 0 at 0)
    e = torch.zeros(3, 1, 2, 2, requires_grad=True)
    ordinal_term(e[0:1], e[1:2], e[2:3], torch.tensor([[0, 1, 2]])).sum().backward()
    assert torch.isfinite(e.grad).all()


def test_squared_distance_minimum_is_a_right_angle_not_a_line():
    line, right_angle = [[0, 0], [1, 0], [2, 0]], [[0, 0], [1, 0], [1, 1]]
    assert _term(line, "l2") == pytest.approx(0.0, abs=1e-12)
    assert _term(right_angle, "l2") > 1e-3
    assert _term(right_angle, "squared") == pytest.approx(0.0, abs=1e-12)
    assert _term(line, "squared") > 1e-3


def test_proportional_spacing_asks_distances_to_follow_grade_differences():
    equal, unequal = [[0, 0], [1, 0], [2, 0]], [[0, 0], [0.2, 0], [2, 0]]
    assert _term(equal, spacing="proportional") == pytest.approx(0.0, abs=1e-12)
    assert _term(unequal, spacing="none") == pytest.approx(0.0, abs=1e-12)  # collinear: fine without spacing
    assert _term(unequal, spacing="proportional") > 1e-3
    # grades (0, 1, 3): q sits a third of the way from p to r
    assert _term([[0, 0], [1, 0], [3, 0]], spacing="proportional", triplet=(0, 1, 3)) == pytest.approx(0.0, abs=1e-12)
    assert _term(equal, spacing="proportional", triplet=(0, 1, 3)) > 1e-3


# ---------------------------------------------------------------- the loss object
def test_gamma_zero_is_exactly_the_dm_loss_with_one_forward_pass():
    torch.manual_seed(0)
    model = build_generator(GeneratorConfig(base_channels=8, channel_mult=[1, 2], num_res_blocks=1,
                                            attention_resolutions=[4], dropout=0.0), 5, 8).eval()
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    c = cfg(gamma=0.0, p_uncond=0.3)
    loss_fn, schedule = DiffusionLoss(c, 5), NoiseSchedule.from_config(c)
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(6, 3, 8, 8, generator=g) * 2 - 1
    labels = torch.tensor([0, 1, 2, 3, 4, 4])
    state = g.get_state()
    out = loss_fn(model, x0, labels, schedule, g)
    assert calls == [6]
    # the DM loss written out by hand, with the same draws in the documented order
    g.set_state(state)
    t = torch.randint(c.timesteps, (6,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    dropped = torch.rand(6, generator=g) < c.p_uncond
    cond = torch.where(dropped, torch.tensor(5), labels)
    abar = schedule.alphas_cumprod.float()[t].view(-1, 1, 1, 1)
    xt = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    expected = (model(xt, t, cond) - noise).pow(2).mean()
    assert torch.equal(out["loss"], expected) and torch.equal(out["l_dm"], expected)
    assert out["l_ord"].item() == 0.0 and out["n_ord"] == 0


def test_all_label_evaluations_go_through_one_forward_call():
    model = TableModel(table_from([[0, 0], [1, 0], [2, 1], [3, 0], [4, 2], [0, 0]]))
    out, *_ = run_loss(DiffusionLoss(cfg(), 5), model, batch=10)
    assert len(model.calls) == 1 and model.calls[0][0].shape[0] == 10 + 3 * 10
    assert out["n_ord"] == 10 and out["l_ord"] > 0
    assert torch.allclose(out["loss"], out["l_dm"] + out["l_ord"])
    model.calls.clear()
    out, *_ = run_loss(DiffusionLoss(cfg(triplets="include-true"), 5), model, batch=10)
    assert len(model.calls) == 1 and model.calls[0][0].shape[0] == 10 + 2 * 10


def test_include_true_triplets_contain_the_true_grade():
    model = TableModel(table_from([[0, 0]] * 6))
    _, _, labels, _ = run_loss(DiffusionLoss(cfg(triplets="include-true"), 5), model, batch=20)
    _, _, seen = model.calls[0]
    lower, higher = seen[20:40], seen[40:60]
    for true, lo, hi in zip(labels.tolist(), lower.tolist(), higher.tolist()):
        assert lo < hi and true not in (lo, hi) and 0 <= lo and hi < 5


def test_ordinal_loss_is_zero_for_ordered_collinear_model_and_positive_for_bent():
    line = TableModel(table_from([[c, 2 * c] for c in range(5)] + [[0, 0]]))
    for options in ({}, {"triplets": "include-true"}, {"spacing": "proportional"}, {"mode": "cross-image"}):
        out, *_ = run_loss(DiffusionLoss(cfg(**options), 5), line, batch=15)
        assert out["l_ord"].item() == pytest.approx(0.0, abs=1e-12), options
    bent = TableModel(table_from([[c, c * c] for c in range(5)] + [[0, 0]]))
    out, *_ = run_loss(DiffusionLoss(cfg(), 5), bent, batch=15)
    assert out["l_ord"].item() > 1e-6  # small only because distances are per element (2 of 48 differ)


def test_lambda_t_weights_the_ordinal_term_by_t_over_T():
    # C = 3: the only triplet is (0, 1, 2); the right angle gives a known per-sample term.
    model = TableModel(table_from([[0, 0], [1, 0], [1, 1], [0, 0]]))
    loss_fn = DiffusionLoss(cfg(timesteps=50), 3)
    out, _, _, schedule = run_loss(loss_fn, model, batch=9, num_classes=3)
    e = table_from([[0, 0], [1, 0], [1, 1]])
    term = ordinal_term(e[0:1], e[1:2], e[2:3], torch.tensor([[0, 1, 2]])).item()
    t = model.calls[0][1][:9]
    expected = (((t.float() + 1) / 50) * term).mean()
    assert out["l_ord"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(schedule.lambda_t(torch.tensor([0, 49])), torch.tensor([1 / 50, 1.0]))


def test_dropped_labels_take_no_part_in_the_ordinal_term():
    model = TableModel(table_from([[0, 0]] * 6))
    out, _, _, _ = run_loss(DiffusionLoss(cfg(p_uncond=0.5), 5), model, batch=16, seed=1)
    x, _, labels = model.calls[0]
    kept = labels[:16] != 5
    assert 0 < int(kept.sum()) < 16  # the seed drops some labels
    assert out["n_ord"] == int(kept.sum()) and x.shape[0] == 16 + 3 * out["n_ord"]
    # the ordinal evaluations reuse exactly the x_t of the kept samples, in batch order
    assert torch.equal(x[16 : 16 + out["n_ord"]], x[:16][kept])


def test_fraction_limits_the_ordinal_subset():
    model = TableModel(table_from([[0, 0]] * 6))
    out, *_ = run_loss(DiffusionLoss(cfg(fraction=0.25), 5), model, batch=16)
    assert out["n_ord"] == 4 and model.calls[0][0].shape[0] == 16 + 3 * 4


def test_cross_image_noises_real_images_of_each_grade_with_the_same_eps_and_t():
    model = TableModel(table_from([[0, 0]] * 6))
    # pool: every image of grade c is the constant c / 10
    pool_labels = torch.arange(5).repeat(4)
    pool_images = (pool_labels.float() / 10).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    pool = ClassPool(pool_images, pool_labels, 5)
    out, x0, labels, schedule = run_loss(DiffusionLoss(cfg(mode="cross-image"), 5), model, batch=6, pool=pool)
    x, t, seen = model.calls[0]
    abar = schedule.alphas_cumprod.float()[t].view(-1, 1, 1, 1)
    eps_dm = (x[:6] - abar[:6].sqrt() * x0) / (1 - abar[:6]).sqrt()
    for r in range(3):
        part = slice(6 + 6 * r, 12 + 6 * r)
        grade_img = (seen[part].float() / 10).view(-1, 1, 1, 1)
        eps = (x[part] - abar[part].sqrt() * grade_img) / (1 - abar[part]).sqrt()
        assert torch.allclose(eps, eps_dm, atol=1e-4) and torch.equal(t[part], t[:6])


def test_cross_image_without_pool_uses_grades_present_in_the_batch():
    model = TableModel(table_from([[0, 0]] * 6))
    labels = torch.tensor([0, 0, 2, 3, 3, 2])  # grades 1 and 4 are absent
    out, *_ = run_loss(DiffusionLoss(cfg(mode="cross-image"), 5), model, batch=6, labels=labels)
    extra = model.calls[0][2][6:]
    assert out["n_ord"] == 6 and set(extra.tolist()) == {0, 2, 3}


def test_fewer_than_three_grades_warns_and_trains_plain_dm(capsys):
    model = TableModel(table_from([[0, 0], [1, 0], [0, 0]]))
    loss_fn = DiffusionLoss(cfg(), 2)
    assert "at least 3 grades" in capsys.readouterr().err
    out, *_ = run_loss(loss_fn, model, batch=8, num_classes=2)
    assert len(model.calls) == 1 and model.calls[0][0].shape[0] == 8
    assert out["l_ord"].item() == 0.0 and torch.equal(out["loss"], out["l_dm"])


@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_the_loss_gradient_enters_the_network_channels_last(gamma):
    # A gradient in another layout sends (bf16) convolution backward to slow CPU kernels.

    torch.manual_seed(0)
    cfg = GeneratorConfig(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[4])
    model = build_generator(cfg, 5, 8).to(memory_format=torch.channels_last)
    seen = []
    model.out_conv.register_full_backward_hook(lambda module, grad_in, grad_out: seen.append(grad_out[0]))
    x0 = torch.rand(10, 3, 8, 8).mul(2).sub(1).contiguous(memory_format=torch.channels_last)
    loss_fn = DiffusionLoss(DiffusionConfig(ordinal=OrdinalConfig(gamma=gamma)), 5)
    out = loss_fn(model, x0, torch.arange(10) % 5, NoiseSchedule.from_config(DiffusionConfig()), torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert len(seen) == 1 and seen[0].is_contiguous(memory_format=torch.channels_last)
