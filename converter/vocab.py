"""GGUF metadata for a Hugging Face Llama directory, written the way llama.cpp's ``convert_hf_to_gguf.py`` does.

general.* (``gguf.Metadata`` from the model card / config), llama.* hyper-parameters, and the tokenizer:
- gpt2-style byte-level BPE (SmolLM, Llama 3): ``tokenizer.ggml.model = "gpt2"``, tokens and types as llama.cpp's
  ``get_vocab_base``, ``tokenizer.ggml.pre`` from llama.cpp's hash of the tokenization of its check text;
- llama SPM-style BPE with byte fallback (Llama 2, TinyLlama): ``"llama"`` with scores, via ``gguf.LlamaHfVocab``
  (llama.cpp's ``_set_vocab_llama_hf``);
then ``gguf.SpecialVocab`` for merges, bos/eos/unk/pad ids, add_bos/add_eos and the chat template.
"""
from __future__ import annotations

import json
import logging
from hashlib import sha256
from pathlib import Path

from maq.errors import MAQError

log = logging.getLogger(__name__)

# llama.cpp's get_vocab_base_pre check text and the hashes of the tokenizers of the Llama family we know.
CHK_TXT = ('\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ '
           '🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ '
           '------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, '
           '\'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL')
KNOWN_PRE = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",   # Meta-Llama-3-8B
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",      # SmolLM / SmolLM2
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",       # openai gpt2
}


def tokenizer_pre_hash(tokenizer) -> str:
    """llama.cpp's chkhsh: sha256 of str(tokenizer.encode(CHK_TXT))."""
    return sha256(str(tokenizer.encode(CHK_TXT)).encode()).hexdigest()


def _looks_special(token: str) -> bool:
    """llama.cpp's ``does_token_look_special``."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<｜") and token.endswith("｜>"))
            or (token.startswith("<unused") and token.endswith(">")))


def _gpt2_vocab(model_dir: Path, n_vocab: int, pre_override: str | None):
    """llama.cpp's get_vocab_base: (tokens, toktypes, pre)."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= n_vocab:
        raise MAQError(f"{model_dir}: tokenizer has token id {max(vocab.values())} >= vocab_size {n_vocab}")
    chk = tokenizer_pre_hash(tokenizer)
    pre = pre_override or KNOWN_PRE.get(chk)
    if pre is None:
        raise MAQError(f"{model_dir}: BPE pre-tokenizer not recognized (llama.cpp chkhsh {chk}); "
                       f"pass --tokenizer-pre NAME (e.g. llama-bpe, smollm, gpt-2)")
    reverse = {i: t for t, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tok = reverse[i]
        if tok in added:
            if not decoder[i].normalized:
                tok = tokenizer.decode(tokenizer.encode(tok, add_special_tokens=False))
            if decoder[i].special or _looks_special(tok):
                types.append(gguf.TokenType.CONTROL)
            else:
                tok = tok.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(tok)
    return tokens, types, pre


def add_tokenizer(w, model_dir: Path, n_vocab: int, pre_override: str | None = None) -> None:
    """Add tokenizer.ggml.* and tokenizer.chat_template to GGUFWriter ``w`` (llama.cpp's LlamaModel.set_vocab)."""
    import gguf

    tj = model_dir / "tokenizer.json"
    if not tj.is_file():
        raise MAQError(f"{model_dir}: no tokenizer.json (a tokenizer.model-only SentencePiece directory "
                       f"needs converting with transformers first)")
    try:
        model = json.loads(tj.read_text(encoding="utf-8")).get("model", {})
    except (OSError, json.JSONDecodeError) as exc:
        raise MAQError(f"{tj}: cannot read JSON: {exc}") from exc
    spm_like = model.get("type") == "BPE" and model.get("byte_fallback", False)
    if spm_like:
        vocab = gguf.LlamaHfVocab(model_dir)
        tokens, scores, types = [], [], []
        for text, score, ttype in vocab.all_tokens():
            tokens.append(text)
            scores.append(score)
            types.append(ttype)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre(pre_override or "default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        special = gguf.SpecialVocab(model_dir, n_vocab=len(tokens))
    else:
        tokens, types, pre = _gpt2_vocab(model_dir, n_vocab, pre_override)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
        special = gguf.SpecialVocab(model_dir, load_merges=True)
    special.add_to_gguf(w, quiet=True)
    if n_vocab == 49152:  # llama.cpp: "granite small models" (SmolLM too) never add BOS
        w.add_add_bos_token(False)


def add_llama_params(w, params, model_dir: Path | None = None) -> None:
    """llama.* hyper-parameters as llama.cpp's TextModel/LlamaModel.set_gguf_parameters write them."""
    import gguf

    w.add_block_count(params.n_layer)
    w.add_context_length(params.n_ctx)
    w.add_embedding_length(params.n_embd)
    w.add_feed_forward_length(params.n_ff)
    w.add_head_count(params.n_head)
    w.add_head_count_kv(params.n_head_kv)
    w.add_rope_freq_base(params.rope_theta)
    w.add_layer_norm_rms_eps(params.rms_eps)
    if params.head_dim != params.n_embd // params.n_head:
        w.add_key_length(params.head_dim)
        w.add_value_length(params.head_dim)
    w.add_vocab_size(params.n_vocab)
    w.add_rope_dimension_count(params.head_dim)
    rs = params.rope_scaling or {}
    rtype = str(rs.get("rope_type", rs.get("type", ""))).lower()
    if rtype == "linear" and "factor" in rs:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rs["factor"]))
    elif rtype not in ("", "default", "llama3"):
        raise MAQError(f"{model_dir}: rope scaling {rtype!r} is not supported (default, linear, llama3)")


def hf_metadata(model_dir: Path, params, total_params: int, pre_override: str | None = None) -> dict:
    """general.* + llama.* + tokenizer.* for a HF directory, as {key: gguf.GGUFValue} in llama.cpp's order."""
    import gguf

    w = gguf.GGUFWriter(path=None, arch="llama")
    w.add_type(gguf.GGUFType.MODEL)
    meta = gguf.Metadata.load(None, model_dir, None, total_params)
    if meta.name is None:
        meta.name = model_dir.name
    if meta.size_label is None and total_params > 0:
        meta.size_label = gguf.size_label(total_params, total_params, 0, 0)
    meta.set_gguf_meta_model(w)
    add_llama_params(w, params, model_dir)
    add_tokenizer(w, model_dir, params.n_vocab, pre_override)
    kv = dict(w.kv_data[0])
    kv.pop(gguf.Keys.General.ARCHITECTURE, None)
    return kv
