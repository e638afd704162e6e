"""tools/blotches.py (issue 19's comparison): its settings are checked before any photo is loaded."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def blotches():
    spec = importlib.util.spec_from_file_location("blotches", ROOT / "tools" / "blotches.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("config, message", [
    ("epochs: 3\nlearning_rate: 1\n", "unknown settings learning_rate"),
    ("candidates: ['GAN, sigmoid']\n", "unknown candidates GAN, sigmoid"),
])
def test_a_bad_config_is_refused_in_one_line(blotches, tmp_path, capsys, config, message):
    (tmp_path / "c.yaml").write_text(config)
    with pytest.raises(SystemExit):
        blotches.main(["--config", str(tmp_path / "c.yaml")])
    assert message in capsys.readouterr().err


def test_the_committed_configs_name_known_candidates(blotches):
    import yaml

    for name in ("comparison.yaml", "resnet18-gan-64-tanh.yaml"):
        settings = yaml.safe_load((ROOT / "configs" / "blotches" / name).read_text())
        assert set(settings["candidates"]) <= set(blotches.CANDIDATES), name
        assert settings["epochs"] >= 3, name


def test_the_published_start_is_loaded_through_the_checksummed_path(blotches, register_published, tiny_checkpoint,
                                                                   tmp_path, monkeypatch):
    """A damaged resnet18-l1-64 file in the models folder is refused (sha256), not fine-tuned from."""
    import shutil

    from colorlab import hub

    register_published("http://127.0.0.1:9/x", sha256="0" * 64, name=blotches.START)
    shutil.copy(tiny_checkpoint, tmp_path / f"{blotches.START}.pt")
    monkeypatch.setenv("COLORLAB_MODELS", str(tmp_path))
    monkeypatch.setattr(blotches, "load_split", lambda *args, **kwargs: ([], []))  # no photos needed to get there
    monkeypatch.setattr(blotches, "val_batches", lambda *args, **kwargs: [])
    with pytest.raises(hub.PublishedModelError, match="sha256"):
        blotches.main(["--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")])
