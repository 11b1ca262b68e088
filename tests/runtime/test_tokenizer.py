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


@pytest.fixture(scope="module")
def spm_vocab():
    """A small SentencePiece-style (tokenizer.ggml.model = llama) vocabulary: <unk> <s> </s>, 256 byte tokens,
    BPE pieces learned on English text with scores = -rank, as llama.cpp stores Llama 2's."""
    import numpy as np
    from tokenizers import SentencePieceBPETokenizer

    text = ("The quick brown fox jumps over the lazy dog. Hello world, hello there. The game's battle system is "
            "fun; its story follows a squad of soldiers. ") * 50
    sp = SentencePieceBPETokenizer()
    sp.train_from_iterator([text], vocab_size=300, min_frequency=2, show_progress=False)
    pieces = [t for t, _ in sorted(sp.get_vocab().items(), key=lambda kv: kv[1]) if t != "<unk>"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    md = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.scores": np.array(scores, np.float32), "tokenizer.ggml.token_type": np.array(types),
          "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0}
    td = {"tokenizer_type": "llama", "tokens": tokens, "scores": scores, "token_type": types, "bos_token_id": 1,
          "eos_token_id": 2, "unk_token_id": 0}
    return md, td


@pytest.mark.parametrize("text", ["Hello world", "The game's battle system, 1234!", "héllo 日本 😀 fox",
                                  "a\n\nb  c"])
def test_sentencepiece_vocabulary_matches_transformers(spm_vocab, text):
    pytest.importorskip("transformers")
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

    md, td = spm_vocab
    tok = T.Tokenizer(md, "spm")
    hf, _ = convert_gguf_tokenizer("llama", td)
    ids = tok.encode(text, add_bos=False)
    assert ids == hf.encode(text, add_special_tokens=False).ids
    assert tok.add_bos and tok.encode(text)[0] == 1               # SentencePiece files default to BOS
    assert tok.decode(ids, special=True) == text
    assert any(tok.token_types[i] == T.TOKEN_BYTE for i in tok.encode("日本"))   # byte fallback


def test_sentencepiece_leading_space_like_llama_cpp(spm_vocab):
    """llama.cpp (like sentencepiece's add_dummy_prefix) prepends one space to the text, so a text that starts
    with a space keeps it: ' The' -> '▁▁The' and decodes back to ' The'."""
    md, _ = spm_vocab
    tok = T.Tokenizer(md, "spm")
    ids = tok.encode(" The fox", add_bos=False)
    assert tok.tokens[ids[0]] == "\u2581" and tok.decode(ids) == " The fox"
    dec = tok.stream()
    assert "".join(dec.feed(i) for i in ids) + dec.flush() == " The fox"
    # after a control token the text is prefixed again (llama.cpp's is_prev_special rule)
    ids = tok.encode("hello</s>world", add_bos=False)
    assert ids[1] == 2 and tok.tokens[ids[2]].startswith("\u2581")
