import math

import pytest
import torch

from colorlab.losses import GANLoss, discriminator_loss, generator_loss


def test_vanilla_loss_known_values():
    loss = GANLoss("vanilla")
    zeros = torch.zeros(2, 1, 30, 30)
    assert loss(zeros, True).item() == pytest.approx(math.log(2))
    big = torch.full((1, 1, 4, 4), 20.0)
    assert loss(big, True).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(big, False).item() == pytest.approx(20.0, abs=1e-4)


def test_lsgan_loss_known_values():
    loss = GANLoss("lsgan")
    x = torch.full((1, 1, 3, 3), 0.5)
    assert loss(x, True).item() == pytest.approx(0.25)
    assert loss(torch.full((1, 1, 3, 3), 3.0), False).item() == pytest.approx(9.0)


def test_discriminator_loss_is_mean_of_real_and_fake():
    loss = GANLoss()
    real, fake = torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), -1.0)
    out = discriminator_loss(loss, real, fake)
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert out["loss_D"].item() == pytest.approx(expected, rel=1e-5)


def test_generator_loss_weights_l1_by_lambda():
    fake_ab, real_ab = torch.zeros(1, 2, 4, 4), torch.full((1, 2, 4, 4), 0.1)
    out = generator_loss(GANLoss(), torch.zeros(1, 1, 2, 2), fake_ab, real_ab, lambda_l1=100.0)
    assert out["loss_G_L1"].item() == pytest.approx(0.1)
    assert out["loss_G"].item() == pytest.approx(math.log(2) + 10.0, rel=1e-5)
    l1_only = generator_loss(None, None, fake_ab, real_ab)
    assert l1_only["loss_G"].item() == pytest.approx(0.1) and "loss_G_GAN" not in l1_only


def test_unknown_gan_mode():
    with pytest.raises(ValueError, match="vanilla, lsgan"):
        GANLoss("wgan")
