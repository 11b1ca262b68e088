"""Interrupted conversions leave nothing behind: Ctrl-C (a real SIGINT to `python -m maq convert`), a full disk,
a failure while an existing --out is being replaced. --out is only ever replaced by a complete file."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("torch")

from maq.cli import main  # noqa: E402

CAL = ["--nsamples", "4", "--seqlen", "64", "--no-progress"]
OLD = b"an existing model file that must survive"


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _convert_proc(model, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "maq", "convert", str(model), "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _sigint_when(proc, ready, timeout=120.0, sig=signal.SIGINT):
    """Send SIGINT as soon as ready(stderr lines so far) is true; fail if the process ended first.
    Returns (exit code, whole stderr)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    t0 = time.time()
    while not ready(lines):
        assert proc.poll() is None, f"conversion ended before the interrupt:\n{''.join(lines)}"
        assert time.time() - t0 < timeout, "the conversion never reached the point to interrupt"
        time.sleep(0.005)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    return proc.returncode, "".join(lines)


def _assert_clean_interrupt(rc, err):
    assert rc == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    lines = err.strip().splitlines()
    assert lines[-1] == "maq: interrupted", err
    assert sum("interrupt" in ln.lower() for ln in lines) == 1, err


def _tmp_bytes(folder) -> int:
    return sum((folder / n).stat().st_size for n in _leftovers(folder) if (folder / n).exists())


@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize("stage", ["opening", "quantizing"])
def test_sigint_while_writing(tiny_hf, tmp_path, existing, stage):
    """SIGINT once the temporary file exists ("opening": header and metadata being written) or once the
    embeddings are in it ("quantizing": GPTQ running on the blocks, > 4 MiB of the tiny model's ~4.9 MiB written):
    exit 130, one line, no temporary file, an existing --out (replaced only with --force) untouched."""
    out = tmp_path / "x.gguf"
    if existing:
        out.write_bytes(OLD)
    proc = _convert_proc(tiny_hf, out, "--force", *CAL)
    if stage == "opening":
        ready = lambda _: bool(_leftovers(tmp_path))  # noqa: E731
    else:
        ready = lambda _: _tmp_bytes(tmp_path) > 4 << 20  # noqa: E731
    rc, err = _sigint_when(proc, ready)
    _assert_clean_interrupt(rc, err)
    assert _leftovers(tmp_path) == []
    if existing:
        assert out.read_bytes() == OLD
    else:
        assert not out.exists()


def test_sigint_before_writing(tiny_hf, tmp_path):
    """SIGINT once the plan is logged (tokenizer loading, calibration; no output opened yet): the same one line,
    nothing created, the existing --out untouched."""
    out = tmp_path / "x.gguf"
    out.write_bytes(OLD)
    proc = _convert_proc(tiny_hf, out, "--force", *CAL)
    rc, err = _sigint_when(proc, lambda lines: any(ln.startswith("calib ") for ln in lines))
    _assert_clean_interrupt(rc, err)
    assert _leftovers(tmp_path) == [] and out.read_bytes() == OLD


def test_sigterm_while_writing(tiny_hf, tmp_path):
    """SIGTERM (a job killed by a scheduler) runs the same cleanup: exit 143, one line, no temporary file."""
    out = tmp_path / "x.gguf"
    out.write_bytes(OLD)
    proc = _convert_proc(tiny_hf, out, "--force", *CAL)
    rc, err = _sigint_when(proc, lambda _: bool(_leftovers(tmp_path)), sig=signal.SIGTERM)
    assert rc == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "maq: terminated", err
    assert _leftovers(tmp_path) == [] and out.read_bytes() == OLD


def test_keyboard_interrupt_in_process(tiny_hf, tmp_path, monkeypatch, capsys):
    """KeyboardInterrupt raised at the worst moments: while writing the header, while streaming, at the rename."""
    import gguf

    from maq.converter import gguf_export as gx

    out = tmp_path / "x.gguf"
    out.write_bytes(OLD)
    args = ["convert", str(tiny_hf), "--out", str(out), "--method", "f32", "--force"]

    def raise_ki(*a, **k):
        raise KeyboardInterrupt

    for target, attr in [(gguf.GGUFWriter, "write_kv_data_to_file"), (gguf.GGUFWriter, "write_tensor_data"),
                         (gx.os, "replace")]:
        with monkeypatch.context() as m:
            m.setattr(target, attr, raise_ki)
            assert main(args) == 130, attr
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1] == "maq: interrupted" and "Traceback" not in err
        assert _leftovers(tmp_path) == [] and out.read_bytes() == OLD, attr


def _enospc_after(n_ok):
    """A GGUFWriter.write_tensor_data that writes n_ok tensors, then fails as a full disk does."""
    import gguf

    orig = gguf.GGUFWriter.write_tensor_data
    calls = [0]

    def write(self, tensor, *a, **k):
        calls[0] += 1
        if calls[0] > n_ok:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return orig(self, tensor, *a, **k)

    return write


@pytest.mark.parametrize("method", ["f32", "maq"])
def test_disk_full_while_streaming(tiny_hf, tmp_path, monkeypatch, capsys, method):
    """ENOSPC in the middle of the tensor data: one line naming the output file and the disk, nothing left."""
    import gguf

    out = tmp_path / "x.gguf"
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", _enospc_after(5))
    assert main(["convert", str(tiny_hf), "--out", str(out), "--method", method, *CAL]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("maq: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert str(out) in lines[0] and "no space left on device" in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


def test_disk_full_at_the_final_flush(tiny_hf, tmp_path, monkeypatch, capsys):
    """The last buffered bytes do not fit (the error surfaces at flush, after every tensor was handed over)."""
    from maq.converter import gguf_export as gx

    out = tmp_path / "x.gguf"
    out.write_bytes(OLD)

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(gx.os, "fsync", fsync)
    assert main(["convert", str(tiny_hf), "--out", str(out), "--method", "f32", "--force"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = [ln for ln in err.splitlines() if ln.startswith("maq: error:")][0]
    assert str(out) in line and "no space left on device" in line and "unchanged" in line, line
    assert _leftovers(tmp_path) == [] and out.read_bytes() == OLD


def test_failure_with_force_keeps_existing_file(tiny_hf, tmp_path, monkeypatch):
    """--force replaces --out only with a complete file: a crash mid-way leaves the old file byte for byte."""
    from maq.converter import source as source_mod

    orig = source_mod.HFSource.tensor

    def boom(self, name):
        if name == "blk.1.ffn_up.weight":
            raise RuntimeError("simulated failure")
        return orig(self, name)

    monkeypatch.setattr(source_mod.HFSource, "tensor", boom)
    out = tmp_path / "x.gguf"
    out.write_bytes(OLD)
    for method in ("f32", "maq"):
        with pytest.raises(RuntimeError, match="simulated"):
            main(["convert", str(tiny_hf), "--out", str(out), "--method", method, "--force", *CAL])
        assert out.read_bytes() == OLD and _leftovers(tmp_path) == [], method


def _fsize_limit(nbytes):
    def pre():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # writes past the limit fail with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return pre


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE / SIGXFSZ (POSIX)")
def test_kernel_refuses_the_write(tiny_hf, tmp_path):
    """A real failing write(2) in a subprocess (file size limit of 1 MiB, the output is ~4 MiB): one line, exit 1,
    nothing left, the existing --out intact."""
    out = tmp_path / "x.gguf"
    out.write_bytes(OLD)
    proc = subprocess.run([sys.executable, "-m", "maq", "convert", str(tiny_hf), "--out", str(out), "--force",
                           "--method", "f32"], capture_output=True, text=True, preexec_fn=_fsize_limit(1 << 20))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("maq: error:") and str(out) in line and "file too large" in line, line
    assert _leftovers(tmp_path) == [] and out.read_bytes() == OLD


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (needs root and mount rights: skipped elsewhere)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_real_disk_full_on_tmpfs(tiny_hf, small_tmpfs, capsys):
    out = small_tmpfs / "x.gguf"
    out.write_bytes(OLD)
    assert main(["convert", str(tiny_hf), "--out", str(out), "--force", "--method", "f32"]) == 1
    err = capsys.readouterr().err
    line = [ln for ln in err.splitlines() if ln.startswith("maq: error:")][0]
    assert str(out) in line and "no space left on device" in line, line
    assert "Traceback" not in err
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["x.gguf"] and out.read_bytes() == OLD
