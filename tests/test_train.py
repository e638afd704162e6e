import signal

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from colorlab.checkpoint import CheckpointError, load_checkpoint, load_generator, save_checkpoint
from colorlab.data import make_loader, to_model_batch
from colorlab.models import Unet, build_discriminator, build_generator, init_weights
from colorlab.stages import GANStage, L1Stage, TrainConfig, stage_config
from colorlab.train import NonFiniteLossError, fit
from tests.conftest import smooth_color_image


class Photos(Dataset):
    """A few smooth colour images as uint8 tensors (what ImageDataset yields)."""

    def __init__(self, n: int = 8, size: int = 32):
        rng = np.random.default_rng(0)
        self.items = [torch.from_numpy(np.asarray(smooth_color_image(rng, size)).copy()).permute(2, 0, 1)
                      for _ in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def loader(n=8, batch_size=4, seed=0):
    return make_loader(Photos(n), batch_size=batch_size, train=True, seed=seed, num_workers=0)


def l1_on(generator, batch):
    L, ab = to_model_batch(batch)
    generator.eval()
    with torch.no_grad():
        return torch.nn.functional.l1_loss(generator(L), ab).item()


def test_l1_pretraining_overfits_a_tiny_batch():
    torch.manual_seed(0)
    G = build_generator("baseline", 32)
    data = loader(n=4, batch_size=4)
    batch = next(iter(data))
    before = l1_on(G, batch)
    history = fit(L1Stage(G, stage_config("pretrain", 30, lr_g=2e-3)), data, device="cpu", progress=False)
    after = l1_on(G, batch)
    assert after < 0.5 * before, (before, after)
    assert history["loss_G_L1"][-1] < history["loss_G_L1"][0]
    assert len(history) == 30


def test_gan_step_updates_both_nets_and_records_all_losses():
    torch.manual_seed(0)
    G, D = build_generator("baseline", 32), build_discriminator()
    g0 = [p.detach().clone() for p in G.parameters()]
    d0 = [p.detach().clone() for p in D.parameters()]
    history = fit(GANStage(G, TrainConfig(epochs=1), D), loader(), device="cpu", progress=False)
    assert set(history.epochs) == {"loss_D", "loss_D_real", "loss_D_fake", "loss_G", "loss_G_GAN", "loss_G_L1",
                                   "seconds"}
    assert all(np.isfinite(v[0]) for v in history.epochs.values())
    assert any(not torch.equal(a, b) for a, b in zip(g0, G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, D.parameters()))
    assert all(p.requires_grad for p in D.parameters())  # frozen only during G steps, not left frozen


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    G, D = build_generator("baseline", 32), build_discriminator()
    fit(GANStage(G, TrainConfig(epochs=1), D), loader(), device="cpu", progress=False,
        checkpoint_path=tmp_path / "gan.pt")
    restored, spec = load_generator(tmp_path / "gan.pt")
    L, _ = to_model_batch(next(iter(loader())))
    G.eval()
    with torch.no_grad():
        assert torch.equal(G(L), restored(L))
    assert spec == G.spec


def test_checkpoint_of_other_architecture_is_refused_with_the_difference(tmp_path):
    G = build_generator("baseline", 32)
    save_checkpoint(tmp_path / "c.pt", {"spec": G.spec, "generator": G.state_dict()})
    with pytest.raises(CheckpointError, match="size: checkpoint has 32, expected 64"):
        load_checkpoint(tmp_path / "c.pt", expected_spec=build_generator("baseline", 64).spec)
    with pytest.raises(CheckpointError, match="arch: checkpoint has 'baseline', expected 'resnet18'"):
        load_checkpoint(tmp_path / "c.pt", expected_spec={"arch": "resnet18", "size": 32})


def test_foreign_files_are_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a colorlab checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable"):
        load_checkpoint(tmp_path / "junk.pt")


def test_checkpoints_refuse_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "colorlab-checkpoint-v1", "spec": {}, "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pt")


def narrow_unet_with_dropout() -> torch.nn.Module:
    """The pix2pix U-Net with 6 downsamplings (so one level with Dropout(0.5)) but 8 base filters: cheap.

    Dropout is what makes a resume sensitive to the global torch RNG: the 32 px baseline has none.
    """
    G = init_weights(Unet(n_down=6, num_filters=8))
    G.spec = {"arch": "baseline", "size": 64, "n_down": 6, "num_filters": 8}
    assert any(isinstance(m, torch.nn.Dropout) for m in G.modules())
    return G


def _run(tmp_path, interrupt_at=None, resume=False):
    torch.manual_seed(0)
    G = narrow_unet_with_dropout()
    D = build_discriminator()
    data = make_loader(Photos(12, size=64), batch_size=4, train=True, seed=7, num_workers=0)
    if interrupt_at is not None:  # deliver a real SIGINT from inside the loop, as Ctrl-C would
        step_counter = {"n": 0}
        original = G.forward

        def forward(x):
            step_counter["n"] += 1
            if step_counter["n"] == interrupt_at:
                signal.raise_signal(signal.SIGINT)
            return original(x)

        G.forward = forward
    return G, D, lambda: fit(GANStage(G, TrainConfig(epochs=2, seed=7), D), data, device="cpu", progress=False,
                             checkpoint_path=tmp_path / "gan.pt", resume=resume)


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
    G_ref, D_ref, go = _run(tmp_path / "ref")
    reference = go()

    G, D, go = _run(tmp_path / "cut", interrupt_at=2)  # 3 steps per epoch: step 2 of epoch 1
    with pytest.raises(KeyboardInterrupt, match="resume"):
        go()
    state = load_checkpoint(tmp_path / "cut" / "gan.pt")
    assert (state["epoch"], state["step"]) == (0, 2)  # saved mid-epoch, at the step boundary
    G2, D2, go = _run(tmp_path / "cut", resume=True)
    resumed = go()
    for key in reference.epochs:
        if key != "seconds":
            assert resumed[key] == reference[key], key
    for a, b in zip(G_ref.state_dict().values(), G2.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(D_ref.state_dict().values(), D2.state_dict().values()):
        assert torch.equal(a, b)


def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    G = build_generator("baseline", 32)
    config = TrainConfig(epochs=3, lr_g=1e-4, log_every=1)
    pretrain = dict(device="cpu", progress=False, checkpoint_path=tmp_path / "p.pt")
    fit(L1Stage(G, TrainConfig(epochs=1, lr_g=1e-4)), loader(), **pretrain)
    good = load_checkpoint(tmp_path / "p.pt")
    original = G.forward
    G.forward = lambda x: original(x) * float("nan")
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        fit(L1Stage(G, config), loader(), **pretrain | {"resume": True})
    kept = load_checkpoint(tmp_path / "p.pt")
    assert kept["epoch"] == good["epoch"] == 1
    assert all(torch.equal(a, b) for a, b in zip(kept["generator"].values(), good["generator"].values()))


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(epochs=1.5), dict(lr_g=-1.0), dict(log_every=0)])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_resume_with_other_settings_is_refused(tmp_path):
    G = build_generator("baseline", 32)
    fit(L1Stage(G, TrainConfig(epochs=1)), loader(), device="cpu", progress=False, checkpoint_path=tmp_path / "p.pt")
    with pytest.raises(ValueError, match="lr_g=0.0002 there, 0.001 now"):
        fit(L1Stage(G, TrainConfig(epochs=2, lr_g=1e-3)), loader(), device="cpu", progress=False,
            checkpoint_path=tmp_path / "p.pt", resume=True)
    more = fit(L1Stage(G, TrainConfig(epochs=2)), loader(), device="cpu", progress=False,  # more epochs: fine
               checkpoint_path=tmp_path / "p.pt", resume=True)
    assert len(more) == 2


def test_checkpoint_whose_weights_do_not_fit_its_spec_is_refused(tmp_path):
    G = build_generator("baseline", 32)
    save_checkpoint(tmp_path / "c.pt", {"spec": {"arch": "baseline", "size": 64, "n_down": 6},
                                        "generator": G.state_dict()})
    save_checkpoint(tmp_path / "d.pt", {"spec": G.spec})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_generator(tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="without a generator"):
        load_generator(tmp_path / "d.pt")


def test_resuming_a_random_init_run_with_a_pretrained_generator_is_refused(tmp_path):
    G = build_generator("resnet18", 32, weights=None)
    fit(L1Stage(G, TrainConfig(epochs=1)), loader(), device="cpu", progress=False, checkpoint_path=tmp_path / "p.pt")
    H = build_generator("resnet18", 32, weights=None)
    H.spec["pretrained"] = True  # as if ImageNet had been reachable this time
    with pytest.raises(CheckpointError, match="pretrained: checkpoint has False, expected True"):
        fit(L1Stage(H, TrainConfig(epochs=2)), loader(), device="cpu", progress=False, checkpoint_path=tmp_path / "p.pt",
            resume=True)
