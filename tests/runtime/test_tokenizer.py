"""Tokenizer from GGUF metadata against transformers' GGUF tokenizer; round trips; streaming UTF-8; chat template."""
from __future__ import annotations

import pytest

from maq.runtime import chat
from maq.runtime import gguf_loader as gl
from maq.runtime import tokenizer as T

TEXTS = [
    "The capital of France is",
    "Hello 12345 world! 3.14159",
    "  leading spaces, tabs\tand\nnewlines\n\n\n",
    "héllo wörld — ünïcödé, 日本語のテキスト, emoji 😀🎉👩‍👩‍👧",
    "don't I'll we've THEY'RE",
    " = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 : <unk> Chronicles ( Japanese : 戦場のヴァルキュリア3 ) \n",
    "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x ** 2  # comment\n",
    "",
]


@pytest.fixture(scope="module")
def tok(smollm2_gguf):
    return T.from_gguf(gl.GGUFFile(smollm2_gguf))


@pytest.fixture(scope="module")
def hf_tok(smollm2_gguf):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)


def test_metadata(tok):
    assert tok.model_type == "gpt2" and tok.pre == "smollm"
    assert tok.n_vocab == 49152 and tok.bos_id == 1 and tok.eos_id == 2
    assert tok.add_bos is False  # tokenizer.ggml.add_bos_token = false in SmolLM2's GGUF
    assert 2 in tok.stop_ids


@pytest.mark.parametrize("text", TEXTS)
def test_matches_transformers(tok, hf_tok, text):
    assert tok.encode(text) == hf_tok.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text), special=True) == text
    assert tok.decode(tok.encode(text, special=False)) == text


def test_special_tokens(tok):
    ids = tok.encode("<|im_start|>user<|im_end|>")
    assert ids[0] == 1 and ids[-1] == 2 and len(ids) == 3
    plain = tok.encode("<|im_start|>", special=False)
    assert 1 not in plain and len(plain) > 1          # written text, not the control token
    assert tok.decode(ids) == "user"                  # control tokens hidden unless special=True
    assert tok.encode("x", add_bos=True)[0] == tok.bos_id


def test_digits_split_like_llama_cpp(tok):
    # tokenizer.ggml.pre = smollm: llama.cpp (and SmolLM2's tokenizer.json) split every digit
    ids = tok.encode("2024")
    assert len(ids) == 4


def test_stream_decoder_emits_only_whole_characters(tok):
    text = "a😀b日本👩‍👩‍👧 é"
    ids = tok.encode(text)
    assert len(ids) > len(text) // 2
    dec = tok.stream()
    pieces = [dec.feed(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    # the emoji's 4 bytes span several tokens: some feeds return nothing until it is complete
    assert any(p == "" for p in pieces[:-1])


def test_unknown_id_is_an_error(tok):
    from maq.errors import MAQError

    with pytest.raises(MAQError):
        tok.decode([49152])


def test_chat_template_matches_transformers(tok, hf_tok):
    convs = [
        [{"role": "user", "content": "What is 2+2?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Name a colour."}],
    ]
    for msgs in convs:
        for gen in (True, False):
            want = hf_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            assert chat.render_for(tok, msgs, add_generation_prompt=gen) == want


def test_chat_template_errors_are_maq_errors():
    from maq.errors import MAQError

    with pytest.raises(MAQError):
        chat.render("{% if %}", [{"role": "user", "content": "x"}])
    with pytest.raises(MAQError):
        chat.render("{{ raise_exception('no system role') }}", [{"role": "user", "content": "x"}])
    assert chat.render(None, [{"role": "user", "content": "x"}]) == "<|im_start|>user\nx<|im_end|>\n" \
                                                                    "<|im_start|>assistant\n"
