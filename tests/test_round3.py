"""Issue 27, reliability round 3: nothing of the user's is overwritten, nothing hangs, every run is what it says.

Each test is named by the broken promise it guards; each fails on the code before its fix.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorlab.checkpoint import save_checkpoint
from colorlab.cli import main
from colorlab.models import build_generator
from tests.conftest import smooth_color_image
from tests.test_cli import train_argv  # a tiny offline baseline run (12 images, 32 px, 1 epoch, batch 4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained 32 px baseline generator: file handling does not need a trained one."""
    torch.manual_seed(0)
    generator = build_generator("baseline", 32)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "gan.pt",
                           {"spec": generator.spec, "generator": generator.state_dict()})


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `colorlab ARGV` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def colorize(inputs: list[Path], out: Path, checkpoint: Path, *extra: str) -> tuple[int, str, str]:
    return run_cli(["colorize", *map(str, inputs), "-o", str(out), "--checkpoint", str(checkpoint),
                    "--device", "cpu", *extra])


def photo(path: Path, seed: int = 0) -> Path:
    smooth_color_image(np.random.default_rng(seed), 40).save(path)
    return path


# --- 1. colorize never overwrites the user's files, never colorizes its own results ---------------------


def test_colorize_into_its_input_folder_keeps_the_users_own_color_png(tmp_path, checkpoint):
    folder = tmp_path / "F"
    folder.mkdir()
    photo(folder / "cat.jpg")
    users = photo(folder / "cat_color.png", seed=7)  # the user's own file, named like an output
    before = users.read_bytes()
    code, stdout, stderr = colorize([folder], folder, checkpoint)
    assert users.read_bytes() == before
    assert not (folder / "cat_color_color.png").exists()  # its own outputs are never inputs
    [line] = [line for line in stderr.splitlines() if "warning:" in line]
    assert "skipped 1 input(s) whose output exists" in line and "cat_color.png" in line and "--overwrite" in line
    assert "left out 1 file(s) of the output folder" in line
    assert code == 0 and "Traceback" not in stderr


def test_a_second_call_into_the_same_folder_skips_instead_of_replacing_unless_overwrite(tmp_path, checkpoint):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = photo(tmp_path / "a" / "x.png", 1), photo(tmp_path / "b" / "x.png", 2)
    out = tmp_path / "out"
    assert colorize([first], out, checkpoint)[0] == 0
    kept = (out / "x_color.png").read_bytes()
    code, _, stderr = colorize([second], out, checkpoint)
    assert code == 0 and (out / "x_color.png").read_bytes() == kept and "skipped 1 input(s)" in stderr
    code, _, stderr = colorize([second], out, checkpoint, "--overwrite")
    assert code == 0 and (out / "x_color.png").read_bytes() != kept and "skipped" not in stderr


def test_rerunning_into_a_subfolder_of_the_input_does_not_colorize_its_own_results(tmp_path, checkpoint):
    nest = tmp_path / "nest"
    nest.mkdir()
    photo(nest / "a.jpg")
    for _ in range(3):
        assert colorize([nest], nest / "colorized", checkpoint)[0] == 0
    assert sorted(p.name for p in (nest / "colorized").iterdir()) == ["a_color.png"]


# --- 2. a run folder is locked while a run writes it ----------------------------------------------------

HOLD_LOCK = """
import sys, time
from colorlab.runs import run_lock
with run_lock(sys.argv[1], "holder"):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_train_into_a_locked_run_folder_stops_and_a_dead_holders_lock_is_taken_over(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "runC"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True,
                              env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, stdout, stderr = run_cli(train_argv(out))
        assert code == 2 and "wrote" not in stdout
        assert stderr.strip() == (f"colorlab train: error: {out}/ is being written by another run "
                                  f"(process {holder.pid}); wait for it to finish, or give another --out")
        assert not (out / "gan.pt").exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    code, stdout, stderr = run_cli(train_argv(out))
    assert code == 0, stderr
    assert (f"colorlab train: took over the lock of {out}/ from process {holder.pid}, which no longer runs"
            in stderr)
    assert (out / "gan.pt").is_file() and (out / ".lock").read_text() == ""  # released at the end


# --- 3. --resume with other settings is refused, naming them ---------------------------------------------


def test_resume_with_another_batch_size_n_images_or_data_is_refused_in_one_line(tmp_path, photo_folder):
    out = tmp_path / "run"
    assert run_cli(train_argv(out))[0] == 0
    before = (out / "gan.pt").read_bytes()
    for options, named in [(dict(batch_size="2"), "batch_size 4 there, 2 now"),
                           (dict(n_images="10"), "n_images 12 there, 10 now"),
                           (dict(data=str(photo_folder)), f"data 'offline' there, '{photo_folder}' now"),
                           (dict(seed="1", size="64"), "size 32 there, 64 now; seed 0 there, 1 now")]:
        code, stdout, stderr = run_cli(train_argv(out, **options) + ["--resume"])
        assert code == 2, (options, stderr)
        [line] = stderr.splitlines()
        assert line.startswith(f"colorlab train: error: cannot resume {out}/: it was started with other settings")
        assert named in line
    assert (out / "gan.pt").read_bytes() == before  # nothing trained, nothing rewritten
    code, _, stderr = run_cli(train_argv(out, epochs="2") + ["--resume"])  # more epochs: the same run, continued
    assert code == 0, stderr


# --- 8, 9. the whole experiment config is checked before any work, every problem in one line -------------

BILLION_LAUGHS = "notes:\n  a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  {chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))


@pytest.mark.parametrize("text, message", [
    ("size: 32\nnotes:\n  when: 2026-12-07\n", "notes.when is a date (datetime.date(2026, 12, 7)): metrics.json"),
    (BILLION_LAUGHS, "72 YAML aliases (*name), more than 16"),
    ("size: 32\nnotes: !!python/object/apply:os.system [echo hi]\n",
     "line 2, column 8: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    ("size: [32\n", "line 2, column 1: expected ',' or ']', but got '<stream end>'"),
    ("- size: 32\n- seed: 1\n", "a config is a mapping of settings (name: value), not a list"),
    ("hello\n", "a config is a mapping of settings (name: value), not a str"),
    ("size: 32\nseed: 1\nsize: 64\n", "line 3, column 1: duplicate key 'size'"),
    ("size: 32\nbatch_size: 100000000000000000000\n", "batch_size must be at most 65_536"),
])
def test_a_bad_experiment_config_is_refused_in_one_line_before_any_work(tmp_path, text, message, monkeypatch):
    import colorlab.experiment as experiment

    def no_work(*args, **kwargs):
        raise AssertionError("the experiment started although its config is bad")

    monkeypatch.setattr(experiment, "load_split", no_work)
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    code, _, stderr = run_cli(["experiment", "--config", str(config), "--out", str(tmp_path / "out"),
                               "--device", "cpu"])
    assert code == 2
    assert stderr.splitlines() == [f"colorlab experiment: error: {config}: {message}" + stderr.split(message, 1)[1]
                                   .rstrip("\n")]
    assert not (tmp_path / "out").exists()


def test_batch_size_far_too_large_is_refused_while_parsing(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(train_argv(tmp_path / "run", batch_size="100000000000000000000"))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "argument --batch-size: must be at most 65_536, got 100000000000000000000")


def test_an_avif_photo_is_an_unsupported_format_not_a_non_image(tmp_path):
    from colorlab.io import ImageLoadError, list_images, load_rgb

    avif = tmp_path / "phone.avif"
    avif.write_bytes(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(64))
    heic = tmp_path / "phone.heic"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    assert list_images(tmp_path) == [avif, heic]  # listed, so that the user hears about them
    for path, kind in [(avif, "AVIF"), (heic, "HEIC")]:
        with pytest.raises(ImageLoadError) as err:
            load_rgb(path)
        assert str(err.value) == f"{path}: unsupported format ({kind}; save it as JPEG or PNG)"


# --- 4, 6, 7. downloads: a total deadline and a minimum rate, capped at the registry's size, no stale temp files

class _BadServer:
    """An HTTP/1.0 server on 127.0.0.1 whose answers misbehave as `mode` says; serves `body` as the model."""

    def __init__(self, body: bytes, mode: str):
        import http.server
        import threading
        import time

        self.body, self.mode, self.sent = body, mode, 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                if server.mode == "claims 10 GB":
                    self.send_header("Content-Length", str(10 * 1000**3))
                elif server.mode != "endless":  # endless: no Content-Length, the end is the connection's close
                    self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                try:
                    if server.mode == "trickle":  # a byte every 0.2 s: never a 30 s silence
                        for i in range(len(server.body)):
                            self.wfile.write(server.body[i:i + 1])
                            self.wfile.flush()
                            server.sent += 1
                            time.sleep(0.2)
                    else:  # exact: the model; claims 10 GB / endless: the model, then zeros for ever
                        self.wfile.write(server.body)
                        while server.mode != "exact":
                            self.wfile.write(bytes(1 << 16))
                            server.sent += 1 << 16
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/tiny-32.pt"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def bad_server(tiny_checkpoint):
    servers = []

    def start(mode: str) -> _BadServer:
        servers.append(_BadServer(tiny_checkpoint.read_bytes(), mode))
        return servers[-1]

    yield start
    for running in servers:
        running.close()


@pytest.mark.parametrize("limit, message", [("rate", "is too slow"), ("deadline", "took more than 2 s")])
def test_a_trickling_server_is_abandoned_by_the_rate_or_the_total_deadline(bad_server, register_published,
                                                                          models_isolated, monkeypatch, limit, message):
    import time

    from colorlab import hub

    server = bad_server("trickle")
    register_published(server.url)
    if limit == "rate":  # judged after 1 s: a byte every 0.2 s is far below 1000 bytes/s
        monkeypatch.setattr(hub, "RATE_GRACE_S", 1)
        monkeypatch.setattr(hub, "MIN_RATE_BPS", 1000)
    else:  # no rate check; the deadline is 2 s plus the size at an enormous rate
        monkeypatch.setattr(hub, "RATE_GRACE_S", 10**6)
        monkeypatch.setattr(hub, "MIN_RATE_BPS", 10**12)
        monkeypatch.setattr(hub, "DEADLINE_S", 2)
    began = time.monotonic()
    with pytest.raises(hub.PublishedModelError, match=message) as error:
        hub.fetch_pretrained("tiny-32")
    assert time.monotonic() - began < 10  # a byte every 0.2 s would take hours for the whole file
    assert "\n" not in str(error.value) and "abandoned" in str(error.value)
    assert list(models_isolated.iterdir()) == []  # no temporary file left


def test_a_content_length_other_than_the_registrys_is_refused_before_reading(bad_server, register_published,
                                                                             models_isolated):
    from colorlab import hub

    server = bad_server("claims 10 GB")
    register_published(server.url)
    with pytest.raises(hub.PublishedModelError, match="announces 10000000000 bytes, the registry") as error:
        hub.fetch_pretrained("tiny-32")
    assert "refused before reading" in str(error.value)
    assert list(models_isolated.iterdir()) == []


def test_a_download_without_a_length_stops_reading_at_the_registrys_size(bad_server, register_published,
                                                                         models_isolated, tiny_checkpoint):
    from colorlab import hub

    server = bad_server("endless")
    register_published(server.url)
    with pytest.raises(hub.PublishedModelError, match="longer than the registry's .* bytes; stopped reading there"):
        hub.fetch_pretrained("tiny-32")
    assert list(models_isolated.iterdir()) == []
    # the server was cut off early, not read until a disk filled: what it sent beyond the model is what the
    # loopback socket buffers took before the connection closed (a few MB), far below this bound
    assert server.sent < 64 * (1 << 20)


FETCH_SCRIPT = """
import sys
from pathlib import Path
from colorlab import hub
hub.MODEL_CACHE, hub.SHARED_MODELS = Path(sys.argv[1]), Path(sys.argv[1]) / "no-shared"
hub.MODELS["tiny-32"] = hub.PublishedModel(name="tiny-32", file="tiny-32.pt", bytes=int(sys.argv[3]), url=sys.argv[2],
                                           sha256=sys.argv[4], spec={"arch": "baseline", "size": 32, "n_down": 5})
hub.fetch_pretrained("tiny-32")
"""


def test_a_download_killed_by_sigkill_leaves_a_temp_file_that_the_next_download_removes(
        bad_server, register_published, models_isolated, tiny_checkpoint, monkeypatch):
    import hashlib
    import os
    import signal
    import subprocess
    import sys
    import time

    from colorlab import hub

    data = tiny_checkpoint.read_bytes()
    trickle = bad_server("trickle")
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    killed = subprocess.Popen([sys.executable, "-c", FETCH_SCRIPT, str(models_isolated), trickle.url, str(len(data)),
                               hashlib.sha256(data).hexdigest()], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(models_isolated.glob(".tiny-32.pt.*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        [partial] = list(models_isolated.glob(".tiny-32.pt.*"))
    finally:
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
    assert partial.exists()  # what SIGKILL leaves behind
    good = _BadServer(data, "exact")
    try:
        register_published(good.url)
        assert hub.fetch_pretrained("tiny-32") == models_isolated / "tiny-32.pt"
    finally:
        good.close()
    assert sorted(p.name for p in models_isolated.iterdir()) == ["tiny-32.pt"]


# --- 5. a missing torchrun peer: one line after a short rendezvous timeout, not 30 silent minutes ---------


@pytest.mark.parametrize("rank, missing", [(0, "the other 1 rank(s) did not all join"), (1, "rank 0 did not answer")])
def test_a_rank_whose_peer_never_starts_stops_with_one_line_naming_it(tmp_path, rank, missing):
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "WORLD_SIZE": "2",
                        "RANK": str(rank), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(port), "COLORLAB_RENDEZVOUS_TIMEOUT": "3"}
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "colorlab", *train_argv(tmp_path / "run"), "--device", "cpu"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert time.monotonic() - began < 120  # torch's default would wait 30 minutes
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"colorlab train: error: rank {rank} of 2: {missing} at 127.0.0.1:{port} "
                           "(MASTER_ADDR:MASTER_PORT) within 3 s")
    assert not (tmp_path / "run").exists()


# --- 10. the fast colorize path computes what colorlab.color computes ------------------------------------


def test_the_lookup_table_path_matches_colorlab_colors_float_conversion_within_one_level():
    """`apply_ab` (float32 numpy, sRGB lookup tables) against the reference: `color.rgb_to_lab` for L,
    `F.interpolate` for the ab upsampling and `color.lab_to_rgb` (float32 inside). Tolerance: one
    8-bit level, the rounding of a value that lies within float32 error (~1e-6) of a half step; the
    encoding table's own step (1/65536 of linear light) is under 0.06 of a level."""
    import torch.nn.functional as F

    from colorlab.color import lab_to_rgb, rgb_to_lab
    from colorlab.colorize import apply_ab

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)  # every kind of colour, sharp detail
    ab_small = (rng.uniform(-80, 80, size=(2, 8, 8))).astype(np.float32)
    result = np.asarray(apply_ab(Image.fromarray(pixels), ab_small)).astype(int)

    rgb = torch.from_numpy(pixels).permute(2, 0, 1)[None].double() / 255
    L = rgb_to_lab(rgb)[:, :1]
    ab = F.interpolate(torch.from_numpy(ab_small)[None].double(), size=(37, 53), mode="bilinear",
                       align_corners=False)
    reference = (lab_to_rgb(torch.cat([L, ab], 1))[0].permute(1, 2, 0).numpy() * 255).round().astype(int)
    difference = np.abs(result - reference)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01, (difference.max(), (difference > 0).mean())


def test_the_threaded_pipeline_paints_each_photo_as_colorize_image_does(tmp_path):
    """colorize_files decodes, predicts (two threads, each with its own copy of a ResNet18-DynamicUnet, whose
    skip connections live on the module) and writes in threads; every photo must still get its own colours:
    a shared model or a batch mix-up would paint one photo with another's. Three batches of photos of several
    sizes, each compared with `colorize_image` of that photo alone (one forward pass of one photo: float sums in
    another order, so within one level of 255)."""
    from colorlab.colorize import BATCH_IMAGES, colorize_files, colorize_image
    from colorlab.models import build_generator

    torch.manual_seed(0)
    generator = build_generator("resnet18", 32, weights=None)
    checkpoint = save_checkpoint(tmp_path / "r18.pt", {"spec": generator.spec, "generator": generator.state_dict()})
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2 * BATCH_IMAGES + 5):
        size = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
        Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(size, Image.BICUBIC).save(
            folder / f"p{i:02d}.png")
    written, failures = colorize_files([folder], tmp_path / "out", checkpoint, device="cpu")
    assert not failures and len(written) == 2 * BATCH_IMAGES + 5
    generator.eval()
    for target in written:
        with Image.open(folder / target.name.replace("_color.png", ".png")) as photo:
            alone = np.asarray(colorize_image(generator, photo.convert("RGB"), 32)).astype(int)
        with Image.open(target) as result:
            assert np.abs(np.asarray(result).astype(int) - alone).max() <= 1, target.name


@pytest.mark.parametrize("height, width", [(1, 1), (1, 7), (5, 1), (300, 257), (700, 100)])
def test_write_png_is_read_back_by_pil_as_exactly_the_pixels_given(tmp_path, height, width):
    """colorize's own PNG encoder ("Up" filter, strips of `STRIP_PIXELS`): lossless for any size, including
    one row, one column and photos of several strips (300x257 and 700x100: the filter crosses strip
    boundaries, where a wrong "row above" would shift every colour of the next strip)."""
    import zlib

    from colorlab.colorize import STRIP_PIXELS, write_png

    assert height * width <= STRIP_PIXELS or height > STRIP_PIXELS // width  # the large ones span strips
    pixels = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    pixels[height // 2:] //= 3  # some smooth-ish rows too
    path = tmp_path / "out.png"
    with open(path, "wb") as file:
        write_png(pixels, file)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (width, height)
        image.load()  # PIL checks each chunk's CRC while decoding
        assert np.array_equal(np.asarray(image), pixels)
    with pytest.raises(ValueError, match="uint8"):
        write_png(pixels.astype(np.float32), io.BytesIO())
    assert zlib.crc32(b"IEND") == int.from_bytes(path.read_bytes()[-4:], "big")


def _process_of_rank(rank: int, parent_argv_part: str) -> int | None:
    """The process id of torchrun's rank `rank` whose command line contains `parent_argv_part` (Linux /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            if (proc.name.isdigit() and parent_argv_part in (proc / "cmdline").read_bytes().decode(errors="replace")
                    and f"\0RANK={rank}\0" in "\0" + (proc / "environ").read_bytes().decode(errors="replace")):
                return int(proc.name)
        except OSError:  # gone, or not ours to read
            continue
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through Linux /proc")
def test_a_sigkilled_rank_ends_the_job_with_one_line_not_tracebacks(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "ddp-run"
    log = tmp_path / "stderr.txt"
    argv = train_argv(out, epochs="50", n_images="40") + ["--device", "cpu", "--nproc", "2"]
    with open(log, "w") as stderr:
        job = subprocess.Popen([sys.executable, "-m", "colorlab", *argv], stdout=subprocess.DEVNULL, stderr=stderr,
                               env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        try:
            deadline, victim = time.monotonic() + 240, None
            while time.monotonic() < deadline and job.poll() is None:
                victim = _process_of_rank(1, str(out))
                if victim and "gan epoch" in log.read_text():
                    break
                time.sleep(0.5)
            assert victim, log.read_text()
            os.kill(victim, signal.SIGKILL)
            assert job.wait(timeout=240) == 1
        finally:
            if job.poll() is None:
                job.kill()
    lines = [line for line in log.read_text().replace("\r", "\n").splitlines()
             if line.strip() and "epoch" not in line and not line.startswith("W")]  # progress bars, torchrun's banner
    assert "Traceback" not in log.read_text()
    assert lines[-1] == (f"colorlab: rank 1 (process {victim}) was killed by SIGKILL; torchrun stopped the other ranks "
                         "(for `train`, the same command with --resume continues from the last checkpoint)")
    assert all(line.startswith(("colorlab", "precision on", "caching images")) for line in lines), lines
    assert [line for line in lines if "error" in line or "killed" in line] == lines[-1:], lines  # one line, not one per rank
