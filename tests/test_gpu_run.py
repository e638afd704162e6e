"""tools/gpu_run.sh: the GPU measurements in one call, dry-run on the CPU so that a lent GPU's minutes go to measuring.

The dry run executes every step of the real run with tiny sizes (no GPU, no ../shared: it makes its own
photos), so a broken step shows up here rather than on the GPU machine.
"""

import csv
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_run.sh"
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_steps  # noqa: E402
from throughput import bf16_peak_flops  # noqa: E402

DRY_RUN_S = 180  # the limit for the dry run on a 2-core CPU
STEPS = ["environment", "cuda-tests", "throughput", "throughput-compiled", "throughput-profile", "plan",
         "experiment", "runs", "chapter-05_baseline", "evaluate"]


def run_script(*args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
    began = time.perf_counter()
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", **_python_env()})
    return done, time.perf_counter() - began


def _python_env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("COLORLAB_SHARED_DATA", "PYTHONPATH")}
    env["PYTHON"] = sys.executable
    return env


def steps_of(out: Path) -> dict[str, str]:
    with (out / "steps.tsv").open() as f:
        return {row["step"]: row["status"] for row in csv.DictReader(f, delimiter="\t")}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "out"
    pack = out.parent / "results.tar.gz"
    # a budget beyond the 3 minutes asked for, so that a busy machine fails the timing test alone
    done, seconds = run_script("--dry-run", "--budget-s", "900", "--pack", str(pack), str(out))
    return out, pack, done, seconds


@pytest.mark.slow
def test_the_dry_run_runs_every_step(dry_run):
    out, _, done, _ = dry_run
    assert done.returncode == 0, done.stderr[-2000:]
    assert steps_of(out) == {step: "ok" for step in STEPS}, (out / "steps.tsv").read_text()


@pytest.mark.slow
def test_the_dry_run_takes_less_than_3_minutes(dry_run):
    *_, seconds = dry_run
    assert seconds < DRY_RUN_S, f"the dry run took {seconds:.0f} s (is the machine busy? `uptime`)"


@pytest.mark.slow
def test_the_dry_run_writes_every_expected_file(dry_run):
    out, pack, _, _ = dry_run
    size = json.loads((out / "plan.json").read_text())["experiment_config"]["size"]
    expected = ["environment.txt", "steps.tsv", "summary.md", "plan.json", "experiment.yaml", "evaluation.json",
                "throughput.json", "throughput-compiled.json", "throughput-profile.json",
                "experiment/metrics.json", "experiment/grid.png", "experiment/losses.png",
                "models/MANIFEST.json", f"models/baseline-{size}.pt", f"models/resnet18-l1-{size}.pt",
                f"models/resnet18-gan-{size}.pt", "chapters/05_baseline.ipynb",
                *(f"logs/{step}.log" for step in STEPS)]
    assert [name for name in expected if not (out / name).is_file()] == []
    # the chapter found the experiment's checkpoints where the runs step put them: had it not, it would have
    # trained into a run folder of its own, a third one
    runs = sorted(folder.name for folder in (out / "models" / "runs").iterdir())
    assert [name.split("-")[0] for name in runs] == ["baseline", "resnet18"]
    assert runs[0] in (out / "chapters" / "05_baseline.ipynb").read_text()
    with tarfile.open(pack) as tar:
        names = tar.getnames()
    assert "./summary.md" in names and not [n for n in names if n.startswith("./models")]


@pytest.mark.slow
def test_the_dry_runs_summary_is_filled_like_chapter_8s_table(dry_run):
    out, *_ = dry_run
    summary = (out / "summary.md").read_text()
    evaluation = json.loads((out / "evaluation.json").read_text())["metrics"]
    assert set(evaluation) == {gpu_steps.GREY, "baseline", "L1-pretrained", "pretrained+GAN"}
    for row in (gpu_steps.GREY, "baseline", "L1-pretrained", "pretrained+GAN", "ground truth"):
        assert f"| {row} |" in summary
    truth = evaluation["baseline"]["colourfulness_true"]  # the truth's colourfulness, beside the models
    truth_row = next(line for line in summary.splitlines() if line.startswith("| ground truth |"))
    assert truth_row.split(" | ")[3] == f"{truth:.1f}"
    assert "| GAN step, resnet18 |" in summary and "| data loading only |" in summary
    assert "epoch(s) per stage" in summary and "failed" not in summary and "missing" not in summary
    for step in STEPS:
        assert f"| {step} | ok |" in summary


@pytest.mark.slow
def test_without_a_gpu_each_gpu_step_fails_alone_and_the_summary_still_comes(tmp_path):
    """The real run on a CPU: its steps ask for CUDA and fail; each failure is recorded and the next step runs."""
    photos = tmp_path / "photos-root"
    assert gpu_steps.main(["photos", str(photos), "--make-tiny"]) == 0
    out = tmp_path / "out"
    # the GPU run's steps before the plan leave the later steps 315 s (tools/gpu_run.sh's BEFORE_PLAN)
    done, seconds = run_script("--budget-s", "420", "--photos", str(photos), str(out), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    status = steps_of(out)
    assert status["throughput"].startswith("failed") and status["experiment"].startswith(("failed", "skipped"))
    assert "environment" in status and "evaluate" in status  # the steps after the failures still ran or were timed
    assert seconds < 420 + 15
    summary = (out / "summary.md").read_text()
    assert "No benchmark result" in summary and "| throughput | failed" in summary


def test_the_real_run_refuses_in_one_line_without_the_photos(tmp_path):
    done, _ = run_script("--photos", str(tmp_path / "nowhere"), str(tmp_path / "out"), timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "cp -r ../shared/data/photos data/" in done.stderr and not (tmp_path / "out" / "steps.tsv").exists()


def test_the_epochs_are_the_most_that_fit_the_time_left():
    rates = {"baseline": 100.0, "pretrain": 200.0, "gan": 50.0}  # one epoch of 1000 photos: 10 + 5 + 20 = 35 s
    assert gpu_steps.epochs_for(349.0, 1000, rates, None) == 9
    assert gpu_steps.epochs_for(350.0, 1000, rates, None) == 10
    assert gpu_steps.epochs_for(350.0, 1000, rates, 4) == 4
    assert gpu_steps.epochs_for(1.0, 1000, rates, None) == 1  # never fewer than one


def test_the_bf16_peak_is_looked_up_from_the_device_name():
    assert bf16_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bf16_peak_flops("NVIDIA H200") == 989e12
    assert bf16_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert bf16_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert bf16_peak_flops("cpu") is None and bf16_peak_flops("Tesla T4") is None
