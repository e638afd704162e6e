"""Training on several processes (colorlab.distributed): 2 CPU processes with gloo against 1 process.

The multi-process tests start 2 real ranks (torch.multiprocessing, spawn) that join through the
environment variables torchrun sets (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK), so
`distributed.setup` is tested as torchrun drives it. The images are generated here (32 px, where the
baseline U-Net has no Dropout layer: `unet_depth(32) == 5`, so its masks cannot differ between ranks).
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from colorlab import distributed, train
from colorlab.checkpoint import load_checkpoint
from colorlab.data import EpochSampler, flip_mask, make_loader
from colorlab.models import build_discriminator, build_generator
from colorlab.stages import GANStage, L1Stage, TrainConfig
from colorlab.train import fit

SIZE, STEPS_OF_8 = 32, 3
# A small learning rate: Adam moves every weight by about lr * sign(gradient), so the few weights whose
# gradient is ~0 (its sign decided by rounding) move apart by ~lr at each step, and at lr 1e-3 the GAN
# stage amplifies that within 3 steps (measured: mean difference 9e-5 at lr 1e-3, 5e-12 at lr 1e-5).
LR = 1e-5


class Photos(torch.utils.data.Dataset):
    """Smooth random uint8 images that remember which of them were read (and can SIGTERM their process)."""

    def __init__(self, n: int, sigterm_at: int | None = None) -> None:
        generator = torch.Generator().manual_seed(7)
        coarse = torch.rand(n, 3, 4, 4, generator=generator)
        self.images = (torch.nn.functional.interpolate(coarse, size=SIZE, mode="bilinear") * 255).to(torch.uint8)
        self.read: list[int] = []
        self.sigterm_at = sigterm_at

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        if len(self.read) == self.sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)  # as a cluster's scheduler would, to this rank only
        self.read.append(index)
        return self.images[index]


def _networks(gan: bool):
    torch.manual_seed(0)
    return build_generator("baseline", SIZE), (build_discriminator() if gan else None)


def _train(batch_size: int, gan: bool, checkpoint: Path | None = None, resume: bool = False,
           photos: Photos | None = None, epochs: int = 1):
    G, D = _networks(gan)
    photos = photos or Photos(8 * STEPS_OF_8)
    config = TrainConfig(epochs=epochs, lr_g=LR, lr_d=LR, log_every=1, seed=3)
    stage = GANStage(G, config, D) if gan else L1Stage(G, config)
    history = fit(stage, make_loader(photos, batch_size, num_workers=0), device="cpu", progress=False,
                  checkpoint_path=checkpoint, resume=resume, sync_bn=True)
    return G, D, history


def _rank(rank: int, port: int, folder: str, scenario: str) -> None:
    """One rank of a 2-process job; writes what it saw into folder/rank{rank}.json."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    folder, report = Path(folder), {"saves": 0}
    save = train.save_checkpoint

    def counting_save(*args, **kwargs):
        report["saves"] += 1
        return save(*args, **kwargs)

    train.save_checkpoint = counting_save  # fit looks the name up at each checkpoint
    if scenario == "equal":
        for stage, gan in (("l1", False), ("gan", True)):
            G, D, history = _train(4, gan, checkpoint=folder / f"{stage}.pt")
            report[stage] = history.epochs
    else:  # "sigterm": rank 1 is signalled while it reads its second batch
        photos = Photos(8 * STEPS_OF_8, sigterm_at=4 if rank == 1 else None)
        try:
            _train(4, gan=True, checkpoint=folder / "gan.pt", photos=photos)
        except KeyboardInterrupt as err:
            report["interrupted"] = str(err)
        report["read"] = photos.read
    (folder / f"rank{rank}.json").write_text(json.dumps(report))


def _two_ranks(tmp_path: Path, scenario: str) -> list[dict]:
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank, args=(port, str(tmp_path), scenario), nprocs=2, start_method="spawn")
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


def _assert_same_weights(state: dict, reference: dict) -> None:
    """Equal within float rounding (1e-6 + 1e-4 relative), but for Adam's sign flips (see LR) on at
    most 0.1% of the entries. Without synced BatchNorm, nearly all weights move apart by ~lr per step."""
    assert list(state) == list(reference)  # no "module." prefixes: the unwrapped networks were saved
    off = torch.cat([((state[k] - v).abs() > 1e-6 + 1e-4 * v.abs()).flatten() for k, v in reference.items()])
    assert off.float().mean() < 1e-3, f"{int(off.sum())} of {len(off)} entries differ"


def test_two_ranks_of_4_train_the_same_weights_as_one_process_of_8(tmp_path):
    """L1 stage and GAN stage, 3 steps each, SyncBatchNorm (on the CPU: AllReduceBatchNorm)."""
    reports = _two_ranks(tmp_path, "equal")
    for stage, gan in (("l1", False), ("gan", True)):
        G, D, history = _train(8, gan)
        state = load_checkpoint(tmp_path / f"{stage}.pt")
        _assert_same_weights(state["generator"], G.state_dict())
        if gan:
            _assert_same_weights(state["discriminator"], D.state_dict())
        for report in reports:  # the logged losses are the ranks' mean: the global batch's losses
            for key, values in history.epochs.items():
                if key != "seconds":
                    assert report[stage][key] == pytest.approx(values, rel=1e-4), (stage, key)
    assert [r["saves"] for r in reports] == [2, 0]  # one checkpoint per stage, by rank 0 only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gan.pt", "l1.pt", "rank0.json", "rank1.json"]


def test_a_sigterm_to_one_rank_stops_both_with_one_checkpoint_and_the_resume_reads_each_image_once(tmp_path):
    reports = _two_ranks(tmp_path, "sigterm")
    assert all("interrupted at epoch 1, step 2" in r["interrupted"] for r in reports)  # both, after the same step
    assert [r["saves"] for r in reports] == [1, 0]
    state = load_checkpoint(tmp_path / "gan.pt")
    assert (state["epoch"], state["step"], state["samples"]) == (0, 2, 16)
    # Resumed by one process with batch 8 (another world size): it continues at global sample 16.
    photos = Photos(8 * STEPS_OF_8)
    _train(8, gan=True, checkpoint=tmp_path / "gan.pt", resume=True, photos=photos)
    seen = reports[0]["read"] + reports[1]["read"] + photos.read
    assert sorted(seen) == list(range(8 * STEPS_OF_8))  # every image exactly once in the epoch


def _shares(n: int, world_size: int, batch_size: int, start: int = 0, drop_last: bool = True) -> list[list[int]]:
    shares = []
    for rank in range(world_size):
        sampler = EpochSampler(n, seed=4)
        sampler.shard(rank, world_size, batch_size, drop_last)
        sampler.set_epoch(2, start=start)
        shares.append(list(sampler))
    return shares


def test_the_ranks_kth_batches_together_are_the_single_process_kth_batch():
    one = _shares(40, 1, 8)[0]
    ranks = _shares(40, 2, 4)
    for k in range(5):
        assert sorted(ranks[0][4 * k:4 * k + 4] + ranks[1][4 * k:4 * k + 4]) == sorted(one[8 * k:8 * k + 8])


@pytest.mark.parametrize("n, drop_last", [(40, True), (43, False)])
@pytest.mark.parametrize("before, after", [(2, 2), (2, 3), (3, 1)])
def test_every_sample_once_per_epoch_across_ranks_also_after_a_resume_with_another_world_size(n, drop_last, before,
                                                                                               after):
    start = 2 * before * 4  # interrupted after 2 global batches of `before` ranks x 4
    seen = [i for share in _shares(n, before, 4, drop_last=drop_last) for i in share[:2 * 4]]
    seen += [i for share in _shares(n, after, 4, start=start, drop_last=drop_last) for i in share]
    expected = set(range(n))
    if drop_last:  # the tail shorter than one global batch is dropped, as one process with that batch drops it
        assert len(seen) == len(set(seen)) and n - len(seen) < after * 4 and set(seen) <= expected
    else:
        assert sorted(seen) == sorted(expected)


def test_a_tail_too_short_for_every_rank_is_refused_rather_than_left_to_hang():
    sampler = EpochSampler(9, seed=0)
    sampler.shard(0, 4, 2, drop_last=False)  # 8 + 1: the last sample for 4 ranks
    with pytest.raises(ValueError, match="1 sample"):
        list(sampler)


def test_a_samples_flip_depends_on_its_place_in_the_epoch_not_its_batch():
    positions = torch.arange(1000)
    flips = flip_mask(3, 1, positions)
    assert 400 < int(flips.sum()) < 600
    assert torch.equal(flip_mask(3, 1, positions[500:]), flips[500:])  # any slice: the same flips
    assert not torch.equal(flip_mask(3, 2, positions), flips) and not torch.equal(flip_mask(4, 1, positions), flips)


def test_one_process_is_untouched_and_the_sync_bn_rule_follows_the_batch_size():
    d, device = distributed.setup(torch.device("cpu"))
    net = build_generator("baseline", SIZE)
    assert not d.enabled and distributed.wrap(net, d, device, sync_bn=True) is net
    assert distributed.reduce_mean({"loss": torch.tensor(2.0)}, d)["loss"] == 2.0
    assert distributed.stop_agreed(True, d, device, compare=False)
    assert distributed.use_sync_bn(4) and not distributed.use_sync_bn(distributed.SYNC_BN_BELOW)
    assert not distributed.use_sync_bn(4, sync_bn=False)


def test_nproc_reruns_the_command_under_torchrun_without_nproc():
    from colorlab.cli import _without_nproc

    argv = _without_nproc(["train", "--nproc", "2", "--size", "32", "--nproc=3", "--offline"])
    assert argv == ["train", "--size", "32", "--offline"]
    command = distributed.torchrun_command(2, argv)
    assert command[1:6] == ["-c", distributed.TORCHRUN, "--standalone", "--nproc_per_node=2", "-m"]
    assert command[6:] == ["colorlab", *argv]
