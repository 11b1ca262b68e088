"""Text that is not valid Unicode (lone surrogates, from surrogateescape decoding) or not text at all, given to the
tokenizer directly: U+FFFD per lone surrogate / one MAQError line, never a TypeError from the tokenizers library."""
from __future__ import annotations

import pytest

import hostile_gguf as hg
from maq.errors import MAQError
from maq.runtime.api import Llama


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "m.gguf"
    kvs, tensors = hg.base_model()
    path.write_bytes(hg.serialize(kvs, tensors)[0])
    return Llama(str(path), n_ctx=16, n_threads=1, verbose=False).tokenizer_


@pytest.mark.parametrize("text", ["\ud800x", "x\udcff", b"\xff\xfe".decode("utf-8", "surrogateescape")])
def test_lone_surrogates_become_replacement_characters(tok, text):
    fixed = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    assert "\ufffd" in fixed
    assert tok.encode(text, add_bos=False) == tok.encode(fixed, add_bos=False)


def test_surrogate_pair_kept_as_its_character(tok):
    assert tok.encode("a\ud83d\ude00b", add_bos=False) == tok.encode("a\U0001F600b", add_bos=False)


@pytest.mark.parametrize("bad", [5, None, b"bytes", ["x"]])
def test_not_text_is_one_maq_error(tok, bad):
    with pytest.raises(MAQError, match="expected str"):
        tok.encode(bad)
