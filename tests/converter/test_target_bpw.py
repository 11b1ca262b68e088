"""Issue 9: MAQ3/MAQ4 through GPTQ, salient words chosen by error (never worse than all-2-bit), the
--target-bpw allocation (budget, metadata, summary) and the files it writes running in the runtime."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from maq.cli import main  # noqa: E402
from maq.converter import allocate as A  # noqa: E402
from maq.converter.gptq import QuantConfig, quantize_maq  # noqa: E402
from maq.converter.hessian import weighted_error  # noqa: E402
from maq.converter.measure import structured_layer  # noqa: E402
from maq.errors import MAQError  # noqa: E402
from maq.runtime import format as fmt  # noqa: E402


@pytest.fixture(scope="module")
def layer():
    return structured_layer()


def _plain_layer():
    """Gaussian weights without outlier words: averaging 4 weights destroys information here."""
    W, H, _ = structured_layer(outliers_per_block=0, seed=3)
    return W, H


# ------------------------------------------------------------------------------------------ GPTQ widths
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("G", [128, 32])
def test_wider_codes_pack_exactly_and_lower_the_error(layer, bits, G):
    W, H, _ = layer
    r = quantize_maq(W, H, QuantConfig(bits=bits, G=G))
    assert r.tensor.bits == bits and (r.tensor.bitmap is None) == (bits > 2)
    np.testing.assert_array_equal(fmt.dequantize(r.tensor), r.Q.numpy())
    assert r.err < r.err_rtn
    if bits > 2:
        lower = quantize_maq(W, H, QuantConfig(bits=bits - 1, G=G))
        assert r.err < 0.6 * lower.err


def test_salient_words_refused_for_wider_codes(layer):
    W, H, _ = layer
    with pytest.raises(ValueError, match="no salient words"):
        quantize_maq(W, H, QuantConfig(bits=3, top_k=2))


# ------------------------------------------------------------------------------------------ word choice
@pytest.mark.parametrize("make", ["structured", "plain"])
@pytest.mark.parametrize("K", [2, 10])
def test_word_choice_error_never_worse_than_all_2bit(layer, make, K):
    W, H = (layer[0], layer[1]) if make == "structured" else _plain_layer()
    plain = quantize_maq(W, H, QuantConfig(top_k=0))
    chosen = quantize_maq(W, H, QuantConfig(top_k=K, refit_rows=True, word_choice="error", never_worse=True))
    assert chosen.err <= plain.err
    np.testing.assert_array_equal(fmt.dequantize(chosen.tensor), chosen.Q.numpy())
    assert chosen.salient.sum() <= K * (W.shape[1] // 16)


def test_word_choice_keeps_the_helpful_words(layer):
    """On the structured layer (outlier words nearly constant over each 4-input span) the means help: the error
    choice keeps most injected words and beats all-2-bit clearly; on the plain layer the paper's coding hurts."""
    W, H, injected = layer
    plain = quantize_maq(W, H, QuantConfig(top_k=0))
    chosen = quantize_maq(W, H, QuantConfig(top_k=2, refit_rows=True, word_choice="error", never_worse=True))
    assert chosen.err < 0.9 * plain.err
    assert (chosen.salient & injected).sum() >= 0.5 * injected.sum()
    W2, H2 = _plain_layer()
    paper = quantize_maq(W2, H2, QuantConfig(top_k=10, refit_rows=True))
    base = quantize_maq(W2, H2, QuantConfig(top_k=0))
    assert paper.err > base.err          # the measured problem the error choice fixes


# ------------------------------------------------------------------------------------------ allocation
def _brute(sizes, costs, budget):
    names = sorted(sizes)
    best = None
    for combo in itertools.product(*[list(costs[n]) for n in names]):
        b = sum(sizes[n][c] for n, c in zip(names, combo))
        if b <= budget:
            cost = sum(costs[n][c] for n, c in zip(names, combo))
            if best is None or cost < best:
                best = cost
    return best


@pytest.mark.parametrize("seed", range(6))
def test_choose_respects_budget_and_is_near_optimal(seed):
    rng = np.random.default_rng(seed)
    cands = A.candidates()
    sizes, costs = {}, {}
    for t in range(4):
        P, T = int(rng.choice([64, 96])), int(rng.choice([128, 256]))
        sizes[f"t{t}"] = {c: c.nbytes(P, T) for c in cands}
        sens = rng.uniform(0.1, 10.0)
        costs[f"t{t}"] = {c: sens * 4.0 ** -c.bits * (1.0 + c.group / 512) for c in cands}
    lo = sum(min(s.values()) for s in sizes.values())
    hi = sum(max(s.values()) for s in sizes.values())
    budget = int(lo + rng.uniform(0.05, 0.6) * (hi - lo))
    pick = A.choose(sizes, costs, budget)
    assert sum(sizes[n][c] for n, c in pick.items()) <= budget
    got = sum(costs[n][c] for n, c in pick.items())
    assert got <= 1.25 * _brute(sizes, costs, budget)
    with pytest.raises(ValueError, match="budget"):
        A.choose(sizes, costs, lo - 1)


def test_candidate_sizes_are_the_format_sizes():
    c = A.Candidate("maq3", 64)
    assert c.nbytes(576, 1536) == fmt.Layout(1536, 576, 64, 3).nbytes
    assert A.Candidate("q8_0").nbytes(576, 1536) == 576 * 48 * 34


# ------------------------------------------------------------------------------------------ end to end
def _linear_bpw(path):
    import gguf

    r = gguf.GGUFReader(str(path))
    nbytes = sum(int(t.n_bytes) for t in r.tensors if t.name.startswith("blk.") and "norm" not in t.name)
    nweights = 0
    for t in r.tensors:
        if t.name.startswith("blk.") and "norm" not in t.name and not any(
                t.name.endswith(s) for s in (".bitmap", ".scales", ".rowscale", ".hi")):
            if t.tensor_type.name == "I32":       # MAQ words: 16 weights per int32
                nweights += int(np.prod(t.shape)) * 16
            else:
                nweights += int(t.shape[0]) * int(t.shape[1])
    return nbytes * 8 / nweights, r


@pytest.fixture(scope="module")
def target_files(tiny_hf, tmp_path_factory):
    out = {}
    d = tmp_path_factory.mktemp("target")
    for B in (3.2, 5.0):
        f = d / f"t{B}.gguf"
        assert main(["convert", str(tiny_hf), "--out", str(f), "--target-bpw", str(B), "--nsamples", "4",
                     "--seqlen", "64", "--no-progress"]) == 0
        out[B] = f
    return out


def test_target_bpw_files_fit_budget_and_record_choice(target_files, caplog):
    for B, f in target_files.items():
        bpw, r = _linear_bpw(f)
        assert bpw <= B + 1e-9
        fields = r.fields
        assert abs(fields["maq.target_bpw"].contents() - B) < 1e-6
        choices = {k: fields[k].contents() for k in fields if k.endswith(".choice")}
        assert len(choices) == 14
        for name, ch in choices.items():
            base = name[len("maq.tensor."):-len(".choice")]
            if ch == "q8_0":
                assert {t.name: t for t in r.tensors}[base].tensor_type.name == "Q8_0"
            else:
                typ, g = ch.split("/g")
                assert fields[fmt.key_tensor_type(base)].contents() == typ
                assert fields[fmt.key_group_size(base)].contents() == int(g)
    assert len({(r.fields[k].contents()) for r in [_linear_bpw(target_files[5.0])[1]] for k in r.fields
                if k.endswith(".choice")}) > 1      # a real mix at 5 bits


def test_target_bpw_files_run_and_more_bits_is_closer_to_float(target_files, tiny_f32_gguf):
    from maq.runtime import model as M
    from maq.runtime.gguf_loader import load

    ids = list(range(100, 140))

    def logits(path):
        m = M.create(load(path), n_ctx=64, n_threads=1)
        return np.array(m.forward(ids, 0, M.LOGITS_ALL), copy=True)

    ref = logits(tiny_f32_gguf)
    errs = []
    for B in (3.2, 5.0):
        lg = logits(target_files[B])
        assert np.isfinite(lg).all()
        errs.append(float(np.abs(lg - ref).mean()))
    assert errs[1] < errs[0]


def test_target_below_minimum_is_one_clear_line(tiny_hf, tmp_path, capsys):
    assert main(["convert", str(tiny_hf), "--out", str(tmp_path / "x.gguf"), "--target-bpw", "2.5",
                 "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "--target-bpw 2.5" in err and "smallest" in err and "Traceback" not in err
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize("args,msg", [
    (["--target-bpw", "3", "--method", "rtn"], "--target-bpw needs"),
    (["--target-bpw", "3", "--bits", "3", "--method", "gptq"], "do not combine"),
    (["--bits", "3"], "no salient words"),
])
def test_bad_dial_options(tiny_hf, tmp_path, capsys, args, msg):
    assert main(["convert", str(tiny_hf), "--out", str(tmp_path / "x.gguf"), "--no-progress", *args]) != 0
    assert msg in capsys.readouterr().err


def test_gptq_bits_4_file_runs(tiny_hf, tmp_path):
    from maq.runtime.gguf_loader import KIND_MAQ4, load

    f = tmp_path / "g4.gguf"
    assert main(["convert", str(tiny_hf), "--out", str(f), "--method", "gptq", "--bits", "4", "--nsamples", "4",
                 "--seqlen", "64", "--no-progress"]) == 0
    m = load(f)
    assert all(getattr(L, k).kind == KIND_MAQ4 for L in m.layers for k in ("wq", "w_down"))


def test_target_bpw_same_bytes_on_1_and_2_threads(tiny_hf, target_files, tmp_path):
    """The allocation (sensitivity pass, float64 cost sums) and the quantization give byte-identical files
    whatever --threads is (the fixture's file was made with torch's default threads)."""
    import hashlib

    digests = {hashlib.sha256(target_files[5.0].read_bytes()).hexdigest()}
    for n in ("1", "2"):
        f = tmp_path / f"t{n}.gguf"
        assert main(["convert", str(tiny_hf), "--out", str(f), "--target-bpw", "5.0", "--nsamples", "4",
                     "--seqlen", "64", "--no-progress", "--threads", n]) == 0
        digests.add(hashlib.sha256(f.read_bytes()).hexdigest())
    assert len(digests) == 1
