"""Up-front checks and signals of `maq convert`: SIGINT works even when inherited as ignored (a background job of
a script), temporary files of dead conversions are removed on the next run, free disk space is checked against
the planned file size before any work."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from maq.cli import main
from maq.converter import gguf_export as gx

OLD = b"an existing model file that must survive"
CAL = ["--nsamples", "4", "--seqlen", "64", "--no-progress"]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_remove_stale_tmp_only_of_dead_processes(tmp_path):
    out = tmp_path / "x.gguf"
    dead, alive = _dead_pid(), os.getppid()
    files = {name: tmp_path / name for name in (
        f".x.gguf.{dead}.tmp",          # a killed conversion to x.gguf: removed
        f".x.gguf.{alive}.tmp",         # a running one: kept
        f".x.gguf.{os.getpid()}.tmp",   # ours: kept
        f".y.gguf.{dead}.tmp",          # another output: kept
        f".x.gguf.{dead}.tmp.keep",     # not our pattern: kept
        f".x.gguf.999999999999.tmp")}  # not a possible pid: removed
    for p in files.values():
        p.write_bytes(b"partial")
    removed = gx.remove_stale_tmp(out)
    assert sorted(p.name for p in removed) == sorted([f".x.gguf.{dead}.tmp", ".x.gguf.999999999999.tmp"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".x.gguf.{alive}.tmp", f".x.gguf.{os.getpid()}.tmp", f".y.gguf.{dead}.tmp", f".x.gguf.{dead}.tmp.keep"])


def test_check_space_names_need_have_and_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 20, 9 << 20, 1 << 20))
    with pytest.raises(gx.MAQError, match=r"x.gguf: no space left on device: need 3.0 MiB, have 1.0 MiB in "
                                          + str(tmp_path)):
        gx.check_space(tmp_path / "x.gguf", 3 << 20)
    gx.check_space(tmp_path / "x.gguf", 1 << 19)


@pytest.fixture
def torch_tiny_hf(request):
    pytest.importorskip("torch")
    return request.getfixturevalue("tiny_hf")


def test_stale_tmp_removed_by_next_conversion(torch_tiny_hf, tmp_path):
    out = tmp_path / "x.gguf"
    stale = tmp_path / f".x.gguf.{_dead_pid()}.tmp"
    stale.write_bytes(b"left by a SIGKILLed conversion")
    assert main(["convert", str(torch_tiny_hf), "--out", str(out), "--method", "f32", "--no-progress"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gguf"]


def test_disk_space_checked_before_calibration(torch_tiny_hf, tmp_path, monkeypatch, capsys):
    """Too little free space: one line with need / have / folder before calibration starts; nothing written."""
    from maq.converter import calibration

    def no_calibration(*a, **k):
        raise AssertionError("calibration started before the disk space check")

    monkeypatch.setattr(calibration, "load_calibration", no_calibration)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 30, (1 << 30) - 300_000,
                                                                                  300_000))
    out = tmp_path / "x.gguf"
    out.write_bytes(OLD)
    t0 = time.monotonic()
    assert main(["convert", str(torch_tiny_hf), "--out", str(out), "--force", *CAL]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("maq: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"{out}: no space left on device: need " in lines[0] and f"have 293.0 KiB in {tmp_path}" in lines[0]
    assert time.monotonic() - t0 < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gguf"] and out.read_bytes() == OLD


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # what a shell does for `cmd &` in a script


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="POSIX signals")
def test_background_sigint_keeps_existing_out(torch_tiny_hf, tmp_path):
    """A --force conversion started with SIGINT ignored (inherited), interrupted once its temporary file exists:
    exit 130 with one line, no temporary file, the existing --out byte for byte."""
    out = tmp_path / "x.gguf"
    out.write_bytes(OLD)
    proc = subprocess.Popen([sys.executable, "-m", "maq", "convert", str(torch_tiny_hf), "--out", str(out),
                             "--force", "--nsamples", "64", "--seqlen", "128", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ignore_sigint)
    t0 = time.monotonic()
    try:
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            assert proc.poll() is None, f"conversion ended before the interrupt: {proc.stderr.read()}"
            assert time.monotonic() - t0 < 120, "the conversion never started writing"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)   # with SIGINT still ignored this times out: the test fails
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "maq: interrupted" and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gguf"] and out.read_bytes() == OLD
