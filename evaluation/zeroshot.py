"""Zero-shot multiple choice by log-likelihood, as lm-evaluation-harness (v0.4) scores it.

Each document becomes one (context, continuation) request per choice; the log-likelihood of the continuation's
tokens given the context is summed. ``acc`` = argmax of the sums is the gold choice; ``acc_norm`` = argmax of the
sums divided by the choice string's length (lm-eval's ``completion_len = len(choice)``: characters of the choice
without the leading space, i.e. its bytes for ASCII text). WinoGrande is "partial evaluation": the choices are two
contexts (the sentence up to the blank with each option) and the continuation (the rest of the sentence) is scored
after each; only ``acc`` is meaningful there.

Prompts and choices follow the harness's task configs for the usual public JSONL exports (one JSON object a line):

| task | fields | context | choices |
| --- | --- | --- | --- |
| arc_easy / arc_challenge | question, choices{text,label}, answerKey | ``Question: {question}\\nAnswer:`` | `` {text}`` |
| openbookqa | question_stem, choices{text,label}, answerKey | ``{question_stem}`` | `` {text}`` |
| piqa | goal, sol1, sol2, label | ``Question: {goal}\\nAnswer:`` | `` {sol1}`` / `` {sol2}`` |
| hellaswag | activity_label, ctx_a, ctx_b, endings, label | ``{activity}: {ctx_a} {Ctx_b}`` (preprocessed) | `` {ending}`` |
| winogrande | sentence, option1, option2, answer | ``{sentence up to _}{option}`` | continuation `` {rest}`` |
| boolq | passage, question, label (0/1) or answer (bool) | ``{passage}\\nQuestion: {question}?\\nAnswer:`` | `` no`` / `` yes`` |

Tokenization as the harness's HF models do: the context's trailing spaces move to the continuation, the
continuation's tokens are those of tokenize(context + continuation) after tokenize(context), no BOS unless the
model adds it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Callable, Protocol, Sequence

from maq.errors import MAQError

TASKS = ("arc_easy", "arc_challenge", "openbookqa", "piqa", "hellaswag", "winogrande", "boolq")


@dataclasses.dataclass
class Doc:
    """One multiple-choice item. ``contexts`` has one context (shared by all ``choices``) or, for partial
    evaluation (WinoGrande), one context per choice and ``choices`` holds the single shared continuation."""

    contexts: list[str]
    choices: list[str]
    gold: int
    multiple_input: bool = False

    def requests(self) -> list[tuple[str, str]]:
        if self.multiple_input:
            return [(c, " " + self.choices[0]) for c in self.contexts]
        return [(self.contexts[0], " " + c) for c in self.choices]

    def norm_lengths(self) -> list[float]:
        """lm-eval's completion_len: len() of each choice string (the contexts for partial evaluation)."""
        return [float(len(c)) for c in (self.contexts if self.multiple_input else self.choices)]


# ---------------------------------------------------------------------------------------------- formats
def _hellaswag_pre(text: str) -> str:
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _letter_gold(doc: dict, labels: list[str]) -> int:
    key = str(doc["answerKey"]).strip()
    if key in labels:
        return labels.index(key)
    # some exports number the answers 1..4 while labelling choices A..D (or the reverse)
    num = {"1": "A", "2": "B", "3": "C", "4": "D", "5": "E"}
    alt = num.get(key) or {v: k for k, v in num.items()}.get(key)
    if alt in labels:
        return labels.index(alt)
    raise KeyError(f"answerKey {key!r} not among the labels {labels}")


def doc_arc(d: dict) -> Doc:
    labels = [str(x) for x in d["choices"]["label"]]
    return Doc([f"Question: {d['question']}\nAnswer:"], list(d["choices"]["text"]), _letter_gold(d, labels))


def doc_openbookqa(d: dict) -> Doc:
    labels = [str(x) for x in d["choices"]["label"]]
    return Doc([d["question_stem"]], list(d["choices"]["text"]), _letter_gold(d, labels))


def doc_piqa(d: dict) -> Doc:
    return Doc([f"Question: {d['goal']}\nAnswer:"], [d["sol1"], d["sol2"]], int(d["label"]))


def doc_hellaswag(d: dict) -> Doc:
    ctx = d["ctx_a"] + " " + d["ctx_b"].capitalize()
    query = _hellaswag_pre(d["activity_label"] + ": " + ctx)
    return Doc([query], [_hellaswag_pre(e) for e in d["endings"]], int(d["label"]))


def doc_winogrande(d: dict) -> Doc:
    s = d["sentence"]
    i = s.index("_")
    cont = s[i + 1:].strip()
    return Doc([s[:i] + d["option1"], s[:i] + d["option2"]], [cont], int(d["answer"]) - 1, multiple_input=True)


def doc_boolq(d: dict) -> Doc:
    if "label" in d:
        gold = int(d["label"])
    else:
        a = d["answer"]
        gold = int(a if isinstance(a, bool) else str(a).strip().lower() in ("true", "yes", "1"))
    return Doc([f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:"], ["no", "yes"], gold)


FORMATS: dict[str, Callable[[dict], Doc]] = {
    "arc_easy": doc_arc, "arc_challenge": doc_arc, "openbookqa": doc_openbookqa, "piqa": doc_piqa,
    "hellaswag": doc_hellaswag, "winogrande": doc_winogrande, "boolq": doc_boolq,
}
_SIGNATURES = [("question_stem", "openbookqa"), ("answerKey", "arc_easy"), ("sol1", "piqa"),
               ("endings", "hellaswag"), ("option1", "winogrande"), ("passage", "boolq")]


def detect_format(name: str, first: dict) -> str:
    """The format of a task: its name if known (``arc_easy``, ``arc-c``...), else guessed from the fields."""
    key = name.lower().replace("-", "_")
    aliases = {"arc_e": "arc_easy", "arc_c": "arc_challenge", "arce": "arc_easy", "arcc": "arc_challenge",
               "obqa": "openbookqa", "wino": "winogrande"}
    key = aliases.get(key, key)
    for t in TASKS:
        if key == t or key.startswith(t):
            return t
    for field, t in _SIGNATURES:
        if field in first:
            return t
    raise MAQError(f"task {name}: cannot tell its format from the fields {sorted(first)[:8]} (expected one of "
                   f"{', '.join(TASKS)})")


def load_task(name: str, path: str | Path, limit: int | None = None) -> tuple[str, list[Doc]]:
    """(format, documents) of a JSONL file."""
    docs: list[Doc] = []
    fmt_name = None
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MAQError(f"{path}: cannot read ({exc})") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MAQError(f"{path}:{i}: not JSON ({exc})") from None
        if fmt_name is None:
            fmt_name = detect_format(name, d)
        try:
            doc = FORMATS[fmt_name](d)
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise MAQError(f"{path}:{i}: not a {fmt_name} item ({type(exc).__name__}: {exc})") from None
        if not 0 <= doc.gold < len(doc.requests()):
            raise MAQError(f"{path}:{i}: gold answer {doc.gold} outside the {len(doc.requests())} choices")
        docs.append(doc)
        if limit and len(docs) >= limit:
            break
    if not docs:
        raise MAQError(f"{path}: no items")
    return fmt_name, docs


# ---------------------------------------------------------------------------------------------- scoring
class Scorer(Protocol):
    def loglikelihood(self, context: str, continuation: str) -> float: ...


def split_pair(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval's _encode_pair: trailing spaces of the context move to the continuation."""
    n = len(context) - len(context.rstrip(" "))
    if n:
        continuation = context[-n:] + continuation
        context = context[:-n]
    return context, continuation


class LlamaScorer:
    """Log-likelihoods through ``maq.Llama.create_completion(echo=True, logprobs=0, max_tokens=1)``: the prompt
    tokens come back with their log-probabilities. ``llm`` is a ``maq.Llama`` (or llama-cpp-python's)."""

    def __init__(self, llm):
        self.llm = llm
        self.calls = 0

    def _tok(self, text: str, bos: bool) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=bos)

    def tokens(self, context: str, continuation: str) -> tuple[list[int], int]:
        """(prompt tokens, number of continuation tokens at its end)."""
        context, continuation = split_pair(context, continuation)
        whole = self._tok(context + continuation, bos=True)
        ctx = self._tok(context, bos=True)
        n_cont = len(whole) - len(ctx)
        if n_cont <= 0:
            raise MAQError(f"continuation {continuation!r} adds no tokens to the context")
        return whole, n_cont

    def loglikelihood(self, context: str, continuation: str) -> float:
        prompt, n_cont = self.tokens(context, continuation)
        if len(prompt) < 2:
            raise MAQError("a scored prompt needs at least one context token")
        out = self.llm.create_completion(prompt, max_tokens=1, echo=True, logprobs=0, temperature=0.0)
        self.calls += 1
        lps = out["choices"][0]["logprobs"]["token_logprobs"]
        bos = self.llm.token_bos()
        listed = len(prompt) - (1 if prompt[0] == bos and bos >= 0 else 0)   # echo drops a leading BOS
        vals = lps[listed - n_cont:listed]
        if len(vals) != n_cont or any(v is None for v in vals):
            raise MAQError(f"prompt logprobs: expected {n_cont} values for the continuation, got {vals}")
        return float(sum(vals))


def score_doc(scorer: Scorer, doc: Doc) -> dict:
    lls = [scorer.loglikelihood(c, x) for c, x in doc.requests()]
    lens = doc.norm_lengths()
    pred = max(range(len(lls)), key=lambda i: lls[i])
    pred_norm = max(range(len(lls)), key=lambda i: lls[i] / lens[i])
    return {"lls": lls, "gold": doc.gold, "acc": float(pred == doc.gold), "acc_norm": float(pred_norm == doc.gold)}


def evaluate(scorer: Scorer, docs: Sequence[Doc], fmt_name: str = "",
             progress: Callable[[int, int], None] | None = None) -> dict:
    """{acc, acc_stderr, acc_norm, acc_norm_stderr, n, items} over ``docs``."""
    items = []
    for i, d in enumerate(docs):
        items.append(score_doc(scorer, d))
        if progress:
            progress(i + 1, len(docs))
    n = len(items)
    out = {"format": fmt_name, "n": n, "items": items}
    for m in ("acc", "acc_norm"):
        v = [it[m] for it in items]
        mean = sum(v) / n
        out[m] = mean
        out[m + "_stderr"] = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1) / n) if n > 1 else float("nan")
    if fmt_name == "winogrande":
        out["acc_norm"] = out["acc_norm_stderr"] = None   # partial evaluation: the harness reports acc only
    return out


def parse_tasks(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``name=path`` pairs."""
    out = []
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep or not name or not path:
            raise MAQError(f"--tasks {s!r}: expected name=path.jsonl (e.g. arc_easy=ARC-Easy-test.jsonl)")
        if not Path(path).is_file():
            raise MAQError(f"--tasks {s}: {path} not found")
        out.append((name, path))
    return out
