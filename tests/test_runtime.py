"""Device and precision selection (colorlab.runtime), with the hardware mocked, and a real fp16 step."""

from __future__ import annotations

import pytest
import torch

from colorlab import runtime
from colorlab.data import to_model_batch
from colorlab.losses import GANLoss
from colorlab.models import build_discriminator, build_generator
from colorlab.stages import GANStage, L1Stage, TrainConfig, pix2pix_step
from colorlab.train import fit


def _hardware(monkeypatch, cuda: bool, mps: bool, capability: tuple[int, int] = (8, 0)) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(runtime, "mps_available", lambda: mps)
    monkeypatch.setattr(runtime, "cuda_capability", lambda device: capability)


@pytest.mark.parametrize(
    "cuda, mps, expected",
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    _hardware(monkeypatch, cuda=cuda, mps=mps)
    assert runtime.pick_device("auto").type == expected


@pytest.mark.parametrize("asked", ["cuda", "cuda:1", "mps"])
def test_a_missing_gpu_is_refused_with_the_alternatives(monkeypatch, asked):
    _hardware(monkeypatch, cuda=False, mps=False)
    with pytest.raises(RuntimeError, match="use device='auto' or 'cpu'"):
        runtime.pick_device(asked)


def test_an_unknown_device_name_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="'gpu' is not a device"):
        runtime.pick_device("gpu")


@pytest.mark.parametrize(
    "capability, dtype, scaling",
    [((9, 0), torch.bfloat16, False),   # H100
     ((8, 0), torch.bfloat16, False),   # A100: the first with native bf16
     ((7, 5), torch.float16, True),     # T4, Colab's free GPU
     ((6, 0), torch.float16, True)],    # P100
)
def test_cuda_precision_follows_the_compute_capability(monkeypatch, capability, dtype, scaling):
    _hardware(monkeypatch, cuda=True, mps=False, capability=capability)
    policy = runtime.precision_policy("cuda")
    assert (policy.dtype, policy.grad_scaling) == (dtype, scaling)
    assert "{}.{}".format(*capability) in policy.describe()


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_cpu_and_mps_train_in_fp32_without_a_scaler(device):
    policy = runtime.precision_policy(device)
    assert not policy.autocast and policy.grad_scaler() is None
    assert policy.describe().startswith(f"precision on {device}: fp32")


def test_the_policy_is_printed_once_per_process(monkeypatch, capsys):
    monkeypatch.setattr(runtime, "_announced", set())
    policy = runtime.precision_policy("cpu")
    for _ in range(3):
        runtime.announce(policy)
    assert capsys.readouterr().out == policy.describe() + "\n"


def test_fit_announces_its_precision_once_for_two_stages(monkeypatch, capsys):
    monkeypatch.setattr(runtime, "_announced", set())
    rgb = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    loader = torch.utils.data.DataLoader(rgb, batch_size=2)
    generator = build_generator("baseline", 32)
    for _ in range(2):
        fit(L1Stage(generator, TrainConfig(epochs=1)), loader, device="cpu", progress=False)
    assert capsys.readouterr().out.count("precision on cpu: fp32") == 1


def _cpu_fp16_supported() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 3, 3))
        torch.amp.GradScaler("cpu")
    except (RuntimeError, AttributeError, TypeError) as err:
        print(f"fp16 autocast or GradScaler unavailable on the CPU in torch {torch.__version__}: {err}")
        return False
    return True


@pytest.mark.skipif(not _cpu_fp16_supported(), reason="this torch has no CPU fp16 autocast + GradScaler")
def test_a_real_fp16_gradscaler_step_updates_both_networks():
    """The T4 path of fit, run on the CPU: fp16 forward passes, scaled losses, finite updates."""
    torch.manual_seed(0)
    G, D = build_generator("baseline", 32), build_discriminator()
    opt_g, opt_d = (torch.optim.Adam(net.parameters(), 2e-4, betas=(0.5, 0.999)) for net in (G, D))
    before = [p.detach().clone() for p in (*G.parameters(), *D.parameters())]
    L, ab = to_model_batch(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=1)
    with torch.autocast("cpu", dtype=torch.float16):
        fake = G(L)
        assert fake.dtype == torch.float16  # autocast really ran the generator in fp16
        losses = pix2pix_step(G, D, opt_g, opt_d, GANLoss(), L, ab, 100.0, scaler)
    assert all(torch.isfinite(value) for value in losses.values())
    after = [p.detach() for p in (*G.parameters(), *D.parameters())]
    assert all(torch.isfinite(p).all() for p in after)
    changed = sum(not torch.equal(a, b) for a, b in zip(before, after))
    assert changed == len(before), f"only {changed} of {len(before)} parameter tensors were updated"
    assert scaler.get_scale() == 2.0**9  # stepped through the scaler, no overflow, updated once


@pytest.mark.skipif(not _cpu_fp16_supported(), reason="this torch has no CPU fp16 autocast + GradScaler")
def test_fit_trains_through_the_policys_autocast_and_scaler(monkeypatch, capsys):
    """fit with the T4 policy (forced on the CPU): every step goes through the policy's one GradScaler."""
    policy = runtime.PrecisionPolicy("cpu", torch.float16, True, "forced for the test")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=1)
    monkeypatch.setattr("colorlab.train.precision_policy", lambda device: policy)
    monkeypatch.setattr(runtime.PrecisionPolicy, "grad_scaler", lambda self: scaler)
    monkeypatch.setattr(runtime, "_announced", set())
    loader = torch.utils.data.DataLoader(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), batch_size=2)
    torch.manual_seed(0)
    history = fit(GANStage(build_generator("baseline", 32), TrainConfig(epochs=1), build_discriminator()), loader,
                  device="cpu", progress=False)
    assert all(torch.isfinite(torch.tensor(values)).all() for values in history.epochs.values())
    assert scaler.get_scale() == 2.0**10  # two steps, each updating the scale once (no overflow)
    assert "fp16 autocast + GradScaler (forced for the test)" in capsys.readouterr().out
