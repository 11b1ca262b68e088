"""GPTQ for MAQ2: exact representability, salient selection, the error ordering maq < gptq < rtn."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from maq.converter.gptq import GPTQ, QuantConfig, quantize_maq  # noqa: E402
from maq.converter.hessian import weighted_error  # noqa: E402
from maq.converter.measure import structured_layer  # noqa: E402
from maq.runtime import format as fmt  # noqa: E402


@pytest.fixture(scope="module")
def layer():
    return structured_layer()


def _rtn_err(W, H, G=128):
    q = torch.from_numpy(fmt.dequantize(fmt.quantize_rtn(W.numpy(), None, G)))
    return weighted_error(W - q, H)


@pytest.mark.parametrize("cfg", [
    QuantConfig(top_k=2), QuantConfig(top_k=2, refit_rows=True), QuantConfig(top_k=2, salient_feedback=False),
    QuantConfig(top_k=3, grouped=False),
    QuantConfig(top_k=0, scale_search="minmax"), QuantConfig(top_k=2, G=32, block=64),
    QuantConfig(top_k=2, G=64, headroom=1.3), QuantConfig(top_k=1, compensate=False)])
def test_packed_tensor_is_exactly_what_gptq_assumed(layer, cfg):
    W, H, _ = layer
    r = quantize_maq(W, H, cfg)
    r.tensor.validate()
    assert np.array_equal(fmt.dequantize(r.tensor), r.Q.numpy())
    # and the errors reported are those of the stored tensor
    assert r.err == pytest.approx(weighted_error(W - torch.from_numpy(fmt.dequantize(r.tensor)), H), rel=1e-5)
    assert r.tensor.bits_per_weight == pytest.approx(fmt.bits_per_weight(W.shape[1], W.shape[0], cfg.G))
    K = cfg.top_k
    assert np.array_equal(r.salient.sum(axis=0), np.full(W.shape[1] // 16, K))
    assert np.array_equal(fmt.unpack(r.tensor).salient, r.salient)


def test_injected_outlier_groups_are_the_salient_ones(layer):
    W, H, injected = layer
    r = quantize_maq(W, H, QuantConfig(top_k=2))
    assert np.array_equal(r.salient, injected)


def test_error_ordering_maq_gptq_rtn(layer):
    """Hessian-weighted output error on a layer with real structure: maq < gptq < rtn."""
    W, H, _ = layer
    maq = quantize_maq(W, H, QuantConfig(top_k=2)).err
    gptq = quantize_maq(W, H, QuantConfig(top_k=0)).err
    rtn = _rtn_err(W, H)
    assert maq < gptq < rtn, (maq, gptq, rtn)
    assert maq < 0.5 * gptq


def test_clip_search_beats_minmax(layer):
    W, H, _ = layer
    clip = quantize_maq(W, H, QuantConfig(top_k=0)).err
    minmax = quantize_maq(W, H, QuantConfig(top_k=0, scale_search="minmax")).err
    assert clip < minmax


def test_deterministic(layer):
    W, H, _ = layer
    a = quantize_maq(W, H, QuantConfig(top_k=2)).tensor
    b = quantize_maq(W, H, QuantConfig(top_k=2)).tensor
    for (ka, va), (kb, vb) in zip(a.parts().items(), b.parts().items()):
        assert ka == kb and va.tobytes() == vb.tobytes()


def test_dead_inputs_and_accumulator():
    """Inputs that are never active get zero H; the layer still quantizes (GPTQ zeroes those weights)."""
    torch.manual_seed(0)
    P, T = 32, 64
    X = torch.randn(512, T)
    X[:, 5] = 0.0
    X[:, 40:48] = 0.0
    g = GPTQ(T)
    for chunk in X.split(100):
        g.add_batch(chunk)
    assert g.nsamples == 512
    assert torch.allclose(g.hessian(), 2 * X.T @ X / 512, rtol=1e-5, atol=1e-5)
    W = torch.randn(P, T) * 0.05
    r = g.quantize(W, QuantConfig(top_k=1))
    assert np.array_equal(fmt.dequantize(r.tensor), r.Q.numpy())
    assert np.isfinite(r.err) and r.err < r.err_rtn


def test_prepared_hessian_is_shared_and_refreshed():
    """GPTQ.prepared: one prepare per (damp, key) for the weights reading one input (the same tensors as a fresh
    prepare inside quantize_maq), recomputed after more calibration tokens arrive."""
    torch.manual_seed(1)
    T = 64
    g = GPTQ(T)
    g.add_batch(torch.randn(256, T))
    H, ph = g.prepared(0.01)
    assert g.prepared(0.01)[1] is ph and g.prepared(0.1)[1] is not ph
    W = torch.randn(16, T) * 0.05
    a = quantize_maq(W, H, QuantConfig(top_k=1), ph).tensor
    b = quantize_maq(W, H, QuantConfig(top_k=1)).tensor
    for va, vb in zip(a.parts().values(), b.parts().values()):
        assert va.tobytes() == vb.tobytes()
    rotated = g.prepared(0.01, "flip", lambda h: h.flip(0).flip(1))[0]
    assert torch.equal(rotated, H.flip(0).flip(1))
    g.add_batch(torch.randn(256, T))
    assert g.prepared(0.01)[1] is not ph and torch.equal(g.prepared(0.01)[0], g.hessian())


def test_ragged_last_group():
    """T = 160 with G = 128: one full group and a ragged one of 32 inputs."""
    torch.manual_seed(1)
    X = torch.randn(1024, 160)
    W = torch.randn(48, 160) * 0.05
    r = quantize_maq(W, 2 * X.T @ X / 1024, QuantConfig(top_k=2))
    assert r.tensor.scales.shape == (48, 4)
    assert np.array_equal(fmt.dequantize(r.tensor), r.Q.numpy())
