"""Bad image folders: each case is one line naming the file or folder, exit 2 from ``ofa-edge``;
``--skip-bad`` / ``skip_bad=True`` skips bad files and says how many."""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from ofa_edge.cli import main
from ofa_edge.data import load_dataset, scan
from ofa_edge.errors import DataError
from test_data_folder import _cache, fm, make_folder  # noqa: F401 - fixtures


def one_line_error(capsys, argv: list[str], *needles: str) -> str:
    """Run ``ofa-edge argv`` in process: exit 2, stderr one line holding every needle."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ofa-edge: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def good(tmp_path, fm) -> Path:  # noqa: F811
    return make_folder(tmp_path / "ds", fm, per_class=6, variants=[("png", "L"), ("jpg", "RGB")])


def _corrupt_middle(path: Path) -> None:
    """Flip bytes inside the PNG's image data (its end, IEND, stays intact)."""
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 8
    data[start:start + 40] = bytes(40)
    path.write_bytes(bytes(data))


BAD_FILES = {
    "garbage.png": lambda p: p.write_bytes(b"this is not a png at all" * 10),
    "empty.jpg": lambda p: p.write_bytes(b""),
    "folder.png": lambda p: p.mkdir(),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_is_one_line_naming_it(good, capsys, name) -> None:
    bad = good / "Trouser" / name
    BAD_FILES[name](bad)
    one_line_error(capsys, ["data", "info", str(good)], str(bad), "--skip-bad")
    with pytest.raises(DataError, match="bad image") as e:
        load_dataset(str(good))
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    ds = load_dataset(str(good), skip_bad=True)
    assert ds.skipped == (f"Trouser/{name}",) and len(ds.train_y) + len(ds.test_y) == 18


def test_truncated_png_is_caught_by_data_info_and_load(good, capsys) -> None:
    victim = good / "Pullover" / "012.png"
    victim.write_bytes(victim.read_bytes()[:150])
    one_line_error(capsys, ["data", "info", str(good)], str(victim), "truncated")
    with pytest.raises(DataError, match="012.png"):
        load_dataset(str(good))


def test_corrupt_image_data_found_at_load_then_served_from_the_cache(good, capsys, monkeypatch) -> None:
    import PIL.Image

    victim = good / "Pullover" / "014.png"
    _corrupt_middle(victim)
    with pytest.raises(zlib.error):  # really corrupt ...
        zlib.decompress(_idat(victim))
    assert scan(good)["bad"] == []  # ... but its ends look whole: only a decode finds it
    with pytest.raises(DataError, match=r"bad image .*014\.png: corrupt") as e:
        load_dataset(str(good))
    assert "\n" not in str(e.value)
    ds = load_dataset(str(good), skip_bad=True)
    assert ds.skipped == ("Pullover/014.png",) and "Pullover/014.png" not in (ds.test_files or ())
    assert ds.fingerprint["files"] == 17
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: pytest.fail("opened an image on a cache hit"))
    with pytest.raises(DataError, match="014.png"):  # the cached bad list, without decoding
        load_dataset(str(good))
    again = load_dataset(str(good), skip_bad=True)
    np.testing.assert_array_equal(again.train_x, ds.train_x)


def _idat(path: Path) -> bytes:
    data = path.read_bytes()
    i = data.index(b"IDAT")
    n = int.from_bytes(data[i - 4:i], "big")
    return data[i + 4:i + 4 + n]


def test_unreadable_file(good, capsys, tmp_path) -> None:
    """A file the user may not read. As root (CI), the command runs as user nobody, whom the
    operating system really refuses."""
    if os.geteuid() != 0:
        victim = good / "Trouser" / "008.png"
        victim.chmod(0)
        try:
            one_line_error(capsys, ["data", "info", str(good)], str(victim), "permission denied")
            assert main(["data", "info", str(good), "--skip-bad"]) == 0
            assert "1 skipped" in capsys.readouterr().out
        finally:
            victim.chmod(0o644)
        return
    import shutil
    import subprocess
    import sys
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="ofa-edge-nobody-"))  # /tmp/pytest-of-root is private to root
    try:
        shared.chmod(0o755)
        folder = shared / "ds"
        shutil.copytree(good, folder)
        (shared / "cache").mkdir(mode=0o777)
        (shared / "cache").chmod(0o777)
        victim = folder / "Trouser" / "008.png"
        victim.chmod(0)
        env = {**os.environ, "OFA_EDGE_DATA_CACHE": str(shared / "cache"), "HOME": str(shared / "cache")}
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                     sys.executable, "-m", "ofa_edge.cli", "data", "info", str(folder)]
        failed = subprocess.run(as_nobody, capture_output=True, text=True, env=env, timeout=120)
        err = failed.stderr.strip()
        assert failed.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert str(victim) in err and "permission denied" in err, err
        skipped = subprocess.run(as_nobody + ["--skip-bad"], capture_output=True, text=True, env=env, timeout=120)
        assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stderr
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_unreadable_file_as_root_too(good, capsys, monkeypatch) -> None:
    """Root reads anything, so the operating system's refusal is simulated at Pillow's open."""
    import PIL.Image

    victim, real_open = good / "Trouser" / "008.png", PIL.Image.open

    def refusing_open(fp, *args, **kwargs):
        if str(fp) == str(victim):
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", refusing_open)
    one_line_error(capsys, ["data", "info", str(good)], str(victim), "permission denied")
    with pytest.raises(DataError, match="008.png: permission denied"):
        load_dataset(str(good))
    assert load_dataset(str(good), skip_bad=True).skipped == ("Trouser/008.png",)


def test_empty_class_folder(good, capsys) -> None:
    (good / "Sandal").mkdir()
    (good / "Sandal" / "notes.txt").write_text("no images here")
    one_line_error(capsys, ["data", "info", str(good)], str(good / "Sandal"), "no images")
    with pytest.raises(DataError, match="Sandal has no images"):
        load_dataset(str(good), skip_bad=True)


def test_one_class_only(tmp_path, fm, capsys) -> None:  # noqa: F811
    root = make_folder(tmp_path / "one", fm, per_class=3)
    for extra in ("Trouser", "Pullover"):
        for f in (root / extra).iterdir():
            f.unlink()
        (root / extra).rmdir()
    one_line_error(capsys, ["data", "info", str(root)], "only one class", "T-shirt-top")


def test_a_class_with_only_bad_files_fails_even_when_skipping(good, capsys) -> None:
    for f in (good / "Trouser").iterdir():
        f.write_bytes(b"")
    one_line_error(capsys, ["data", "info", str(good), "--skip-bad"], str(good / "Trouser"), "no readable images")
    with pytest.raises(DataError, match="no readable images"):
        load_dataset(str(good), skip_bad=True)


def test_skip_bad_reports_the_count(good, capsys) -> None:
    for name, make in BAD_FILES.items():
        make(good / "Trouser" / name)
    (good / "Pullover" / "012.png").write_bytes((good / "Pullover" / "012.png").read_bytes()[:100])
    assert main(["data", "info", str(good), "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "bad files 4 skipped" in out and "Trouser/empty.jpg (an empty file, 0 bytes)" in out
    assert main(["data", "info", str(good), "--skip-bad", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert sorted(b["file"] for b in info["bad"]) == ["Pullover/012.png", "Trouser/empty.jpg",
                                                      "Trouser/folder.png", "Trouser/garbage.png"]
    assert sum(info["counts"].values()) == 17 and info["fingerprint"]["files"] == 17  # 18 less the truncated one
    ds = load_dataset(str(good), skip_bad=True)
    assert len(ds.skipped) == 4 and ds.fingerprint == info["fingerprint"]


def test_console_script_prints_one_line(run_cli, good) -> None:
    (good / "Trouser" / "bad.webp").write_bytes(b"RIFF\x00\x00")
    result = run_cli("data", "info", str(good))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "bad.webp" in result.stderr
