"""tools/rerun_losses.py: results/cpu64's loss curves come from a re-run, and metrics.json says so."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import rerun_losses  # noqa: E402

CONFIG = {"size": 64, "seed": 0}
METRICS = {"psnr": 21.0, "ssim": 0.8, "colourfulness": 30.0, "dCF": -9.0}


def _write(tmp_path, rerun_config=CONFIG):
    results = tmp_path / "results"
    results.mkdir()
    (results / "metrics.json").write_text(json.dumps({
        "config": CONFIG, "metrics": {"baseline": METRICS},
        "missing": {"losses.png": "no history in the published files"}}))
    rerun = tmp_path / "rerun.json"
    rerun.write_text(json.dumps({
        "config": rerun_config, "command": "colorlab experiment --config configs/cpu64.yaml", "commit": "abc1234",
        "date": "2026-11-30", "device": "cpu", "seconds": {"baseline (cGAN + L1)": 12.5},
        "metrics": {"baseline": METRICS | {"psnr": 21.5}},
        "history": {"baseline": {"loss_G": [3.0, 2.0, 1.5], "loss_D": [0.7, 0.6, 0.6], "seconds": [1, 1, 1]}}}))
    return results, rerun


def test_draws_the_rerun_losses_and_records_their_source(tmp_path):
    results, rerun = _write(tmp_path)
    assert rerun_losses.main([str(rerun), "--results", str(results), "--note", "resumed once"]) == 0
    assert (results / "losses.png").stat().st_size > 1000
    summary = json.loads((results / "metrics.json").read_text())
    assert "missing" not in summary
    record = summary["losses.png"]
    assert record["rerun"]["commit"] == "abc1234"
    assert record["rerun_vs_published"]["baseline"]["psnr"] == {"rerun": 21.5, "published": 21.0}
    assert record["command"].startswith("python tools/rerun_losses.py")
    assert record["note"] == "resumed once"


def test_refuses_a_rerun_of_another_config(tmp_path):
    results, rerun = _write(tmp_path, rerun_config={"size": 32, "seed": 0})
    with pytest.raises(SystemExit):
        rerun_losses.main([str(rerun), "--results", str(results)])
    assert not (results / "losses.png").exists()
