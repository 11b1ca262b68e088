"""Zero-shot multiple choice by log-likelihood, as lm-evaluation-harness (v0.4) scores it.

Each document becomes one (context, continuation) request per choice; the log-likelihood of the continuation's
tokens given the context is summed. ``acc`` = argmax of the sums is the gold choice; ``acc_norm`` = argmax of the
sums divided by the choice string's length (lm-eval's ``completion_len = len(choice)``: characters of the choice
without the leading space, i.e. its bytes for ASCII text). WinoGrande is "partial evaluation": the choices are two
contexts (the sentence up to the blank with each option) and the continuation (the rest of the sentence) is scored
after each; only ``acc`` is meaningful there.

Prompts and choices follow the harness's task configs. Items are read from the official file formats as shipped
(``read_records``) and from the usual HF JSONL exports (one JSON object a line):

| task | files (official / HF) | context | choices |
| --- | --- | --- | --- |
| arc_easy / arc_challenge | ARC JSONL (``question.stem``, ``question.choices[]``) or HF JSON array / JSONL (``question``, ``choices{text,label}``) | ``Question: {question}\\nAnswer:`` | `` {text}`` |
| openbookqa | official JSONL (``question.stem``...) or HF (``question_stem``) | ``{stem}`` | `` {text}`` |
| piqa | ``valid.jsonl`` (goal, sol1, sol2) + ``valid-labels.lst`` | ``Question: {goal}\\nAnswer:`` | `` {sol1}`` / `` {sol2}`` |
| hellaswag | llama.cpp text (.txt or .txt.bz2: context, gold, 4 endings) or HF (ctx_a, ctx_b, endings) | ``{activity}: {ctx}`` (preprocessed) | `` {ending}`` |
| winogrande | ``dev.jsonl`` (sentence, option1, option2, answer) [+ ``dev-labels.lst``] | ``{sentence up to _}{option}`` | continuation `` {rest}`` |
| boolq | official (passage, question, answer true/false) or HF (label 0/1) | ``{passage}\\nQuestion: {question}?\\nAnswer:`` | `` no`` / `` yes`` |

A labels file ``<stem>-labels.lst`` beside a data file (one gold answer a line, as PIQA and WinoGrande ship them)
gives the gold answers. HellaSwag's llama.cpp text holds ``activity_label: ctx_a ctx_b`` already joined, so lm-eval's
capitalization of ctx_b's first letter cannot be applied; the context is scored as shipped.

The shared sets (``../shared/data/qa``, ``QA_FOLDERS``) are named on the command line by folder: ``qa`` (all seven),
a task name (``arc_easy``, ``arc-easy``), a folder, or ``name=path`` (see ``resolve_tasks``).

Tokenization as the harness's HF models do: the context's trailing spaces move to the continuation, the
continuation's tokens are those of tokenize(context + continuation) after tokenize(context), no BOS unless the
model adds it.
"""
from __future__ import annotations

import bz2
import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Callable, Protocol, Sequence

from maq.errors import MAQError

TASKS = ("arc_easy", "arc_challenge", "openbookqa", "piqa", "hellaswag", "winogrande", "boolq")
# the shared sets' folders under data/qa (the README there names the files); the paper's Table 3 column order
QA_FOLDERS: dict[str, str] = {"piqa": "piqa", "boolq": "boolq", "openbookqa": "openbookqa", "winogrande": "winogrande",
                              "arc_easy": "arc-easy", "arc_challenge": "arc-challenge", "hellaswag": "hellaswag"}
DATA_SUFFIXES = (".jsonl", ".json", ".txt", ".bz2")
# lm-eval reports acc only for these: WinoGrande (partial evaluation) and BoolQ (its metric list)
ACC_ONLY = ("winogrande", "boolq")
LABELS = {"piqa": "PIQA", "boolq": "BoolQ", "openbookqa": "OBQA", "winogrande": "WinoGrande", "arc_easy": "ARC-e",
          "arc_challenge": "ARC-c", "hellaswag": "HellaSwag"}


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
        """acc_norm's divisor: the UTF-8 bytes of each choice string without the leading space (lm-eval's
        completion_len; the contexts for partial evaluation)."""
        return [float(len(c.encode("utf-8"))) for c in (self.contexts if self.multiple_input else self.choices)]


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


def _stem_choices(d: dict) -> tuple[str, list[str], list[str]]:
    """(stem, texts, labels) of an ARC / OpenBookQA item: official layout (``question: {stem, choices: [{text,
    label}]}``) or HF's (``question`` / ``question_stem`` and ``choices: {text: [], label: []}``)."""
    q = d["question"] if "question" in d else d["question_stem"]
    if isinstance(q, dict):
        ch = q["choices"]
        return q["stem"], [c["text"] for c in ch], [str(c["label"]) for c in ch]
    stem = d.get("question_stem", q)
    return stem, list(d["choices"]["text"]), [str(x) for x in d["choices"]["label"]]


def doc_arc(d: dict) -> Doc:
    stem, texts, labels = _stem_choices(d)
    return Doc([f"Question: {stem}\nAnswer:"], texts, _letter_gold(d, labels))


def doc_openbookqa(d: dict) -> Doc:
    stem, texts, labels = _stem_choices(d)
    return Doc([stem], texts, _letter_gold(d, labels))


def doc_piqa(d: dict) -> Doc:
    return Doc([f"Question: {d['goal']}\nAnswer:"], [d["sol1"], d["sol2"]], int(d["label"]))


def doc_hellaswag(d: dict) -> Doc:
    if "ctx_a" in d:
        query = _hellaswag_pre(d["activity_label"] + ": " + d["ctx_a"] + " " + d["ctx_b"].capitalize())
    else:                      # llama.cpp's text: "activity_label: ctx" already joined (read_hellaswag_text)
        query = _hellaswag_pre(d["ctx"])
    return Doc([query], [_hellaswag_pre(e) for e in d["endings"]], int(d["label"]))


def doc_winogrande(d: dict) -> Doc:
    s = d["sentence"]
    i = s.index("_")
    cont = s[i + 1:].strip()
    gold = int(d["answer"] if "answer" in d else d["label"]) - 1
    return Doc([s[:i] + d["option1"], s[:i] + d["option2"]], [cont], gold, multiple_input=True)


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
_ALIASES = {"arc_e": "arc_easy", "arc_c": "arc_challenge", "arce": "arc_easy", "arcc": "arc_challenge",
            "obqa": "openbookqa", "wino": "winogrande"}
_SIGNATURES = [("question_stem", "openbookqa"), ("answerKey", "arc_easy"), ("sol1", "piqa"),
               ("endings", "hellaswag"), ("option1", "winogrande"), ("passage", "boolq")]


def detect_format(name: str, first: dict) -> str:
    """The format of a task: its name if known (``arc_easy``, ``arc-c``...), else guessed from the fields."""
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    for t in TASKS:
        if key == t or key.startswith(t):
            return t
    for field, t in _SIGNATURES:
        if field in first:
            return t
    raise MAQError(f"task {name}: cannot tell its format from the fields {sorted(first)[:8]} (expected one of "
                   f"{', '.join(TASKS)})")


def data_file(path: str | Path) -> Path:
    """The one data file of a task folder (``.jsonl``, ``.json``, ``.txt`` or ``.txt.bz2``; labels files aside), or
    ``path`` itself if it is a file."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise MAQError(f"{p}: task file or folder not found")
    found = sorted(q for q in p.iterdir() if q.is_file() and q.name.endswith(DATA_SUFFIXES)
                   and not q.name.endswith("-labels.lst"))
    if len(found) != 1:
        raise MAQError(f"{p}: expected one data file (.jsonl, .json, .txt, .txt.bz2), found "
                       f"{[q.name for q in found] or 'none'}")
    return found[0]


def _text(path: Path) -> str:
    try:
        raw = path.read_bytes()
        if path.suffix == ".bz2":
            raw = bz2.decompress(raw)
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MAQError(f"{path}: cannot read ({exc})") from None


def read_hellaswag_text(text: str, path: Path | str = "") -> list[dict]:
    """llama.cpp's ``perplexity --hellaswag`` text: 6 lines per task (context, gold 0-3, four endings) ->
    [{ctx, label, endings}]."""
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) % 6:
        raise MAQError(f"{path}: {len(lines)} lines, expected 6 per task (context, gold, 4 endings)")
    out = []
    for k in range(0, len(lines), 6):
        gold = lines[k + 1].strip()
        if gold not in ("0", "1", "2", "3"):
            raise MAQError(f"{path}:{k + 2}: gold answer {gold!r}, expected 0-3 (6 lines per task)")
        out.append({"ctx": lines[k], "label": int(gold), "endings": lines[k + 2:k + 6]})
    return out


def read_labels(path: Path) -> list[str]:
    """A labels file: one gold answer a line."""
    return [ln.strip() for ln in _text(path).splitlines() if ln.strip()]


def read_records(path: str | Path) -> list[dict]:
    """The items of a data file as shipped: JSONL, a JSON array, or llama.cpp's HellaSwag text (``.txt``, ``.bz2``);
    gold answers from ``<stem>-labels.lst`` beside it (PIQA, WinoGrande) go into ``label``."""
    path = Path(path)
    text = _text(path)
    name = path.name[:-4] if path.suffix == ".bz2" else path.name
    if name.endswith(".txt"):
        recs = read_hellaswag_text(text, path)
    elif name.endswith(".json") and text.lstrip().startswith("["):
        try:
            recs = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MAQError(f"{path}: not a JSON array ({exc})") from None
        if not all(isinstance(r, dict) for r in recs):
            raise MAQError(f"{path}: expected a JSON array of objects")
    else:
        recs = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MAQError(f"{path}:{i}: not JSON ({exc})") from None
            if not isinstance(d, dict):
                raise MAQError(f"{path}:{i}: expected a JSON object")
            recs.append(d)
    stem = name.rsplit(".", 1)[0]
    lab = path.with_name(f"{stem}-labels.lst")
    if lab.is_file():
        labels = read_labels(lab)
        if len(labels) < len(recs):
            raise MAQError(f"{lab}: {len(labels)} labels for {len(recs)} items in {path.name}")
        for i, (d, g) in enumerate(zip(recs, labels)):
            if "answer" in d and str(d["answer"]).strip() != g:
                raise MAQError(f"{lab}:{i + 1}: label {g!r} but {path.name} item {i + 1} answers {d['answer']!r}")
            d["label"] = g
    return recs


def load_task(name: str, path: str | Path, limit: int | None = None) -> tuple[str, list[Doc]]:
    """(format, the first ``limit`` documents) of a task file or folder (``data_file``, ``read_records``)."""
    path = data_file(path)
    recs = read_records(path)
    if not recs:
        raise MAQError(f"{path}: no items")
    fmt_name = detect_format(name, recs[0])
    docs: list[Doc] = []
    for i, d in enumerate(recs[:limit] if limit else recs, 1):
        try:
            doc = FORMATS[fmt_name](d)
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise MAQError(f"{path}: item {i}: not a {fmt_name} item ({type(exc).__name__}: {exc})") from None
        if not 0 <= doc.gold < len(doc.requests()):
            raise MAQError(f"{path}: item {i}: gold answer {doc.gold} outside the {len(doc.requests())} choices")
        docs.append(doc)
    return fmt_name, docs


def count_items(path: str | Path) -> int:
    """Items in a task file or folder (all of them, whatever limit is used)."""
    return len(read_records(data_file(path)))


def canonical_task(name: str) -> str | None:
    """A task name (``arc-easy``, ``ARC_e``, ``obqa``...) as in TASKS, or None."""
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    return key if key in TASKS else None


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
    """Log-likelihoods from the engine behind a ``maq.Llama``: the prompt's K/V cache is kept between requests, so a
    context shared by the choices of an item (and any common prefix) is run once; logits are computed only for the
    positions that predict the continuation. The scorer owns ``llm.model``'s cache (``llm`` is reset first)."""

    def __init__(self, llm):
        self.llm = llm
        self.model = llm.model
        self.calls = 0
        self.evaluated = 0          # tokens run through the model (the rest was re-used from the cache)
        self._cached: list[int] = []
        llm.reset()

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
        import numpy as np

        from maq.runtime.model import LOGITS_ALL, LOGITS_NONE
        from maq.runtime.sampling import log_softmax

        prompt, n_cont = self.tokens(context, continuation)
        n = len(prompt)
        if n < 2 or n_cont >= n:
            raise MAQError("a scored prompt needs at least one context token")
        if n > self.llm.n_ctx():
            raise MAQError(f"prompt of {n} tokens does not fit the context window n_ctx={self.llm.n_ctx()}")
        first = n - n_cont - 1          # the position whose logits predict the first continuation token
        keep = 0
        for a, b in zip(self._cached, prompt[:first]):
            if a != b:
                break
            keep += 1
        self._cached = []               # a failed forward leaves the cache unknown
        if first > keep:                # the context's new tokens: K/V only, no logits
            self.model.forward(np.asarray(prompt[keep:first], np.int32), keep, LOGITS_NONE)
        logits = self.model.forward(np.asarray(prompt[first:], np.int32), first, LOGITS_ALL)
        self._cached = list(prompt)
        self.calls += 1
        self.evaluated += n - keep
        rows = logits[:n_cont]                            # rows predicting prompt[first + 1 .. n - 1]
        vals = [float(log_softmax(r)[t]) for r, t in zip(rows, prompt[first + 1:])]
        if len(vals) != n_cont or not all(math.isfinite(v) for v in vals):
            raise MAQError(f"continuation log-probabilities: expected {n_cont} finite values, got {vals}")
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
    if fmt_name in ACC_ONLY:
        out["acc_norm"] = out["acc_norm_stderr"] = None   # the harness reports acc only
    return out


def resolve_tasks(specs: Sequence[str], data_dir: str | Path | None = None) -> list[tuple[str, Path]]:
    """(task name, file or folder) of each ``--tasks`` entry:

    * ``name=path`` — a file or a task folder;
    * a folder holding the shared sets' folders (``QA_FOLDERS``) — all of them, in Table 3's order;
    * a task folder — the task named by the folder;
    * ``qa`` — ``data_dir/qa``, all seven; a task name (``arc_easy``, ``arc-easy``) — its folder in ``data_dir/qa``.
    """
    qa = Path(data_dir) / "qa" if data_dir is not None else None
    out: list[tuple[str, Path]] = []
    for s in specs:
        name, sep, path = s.partition("=")
        if sep:
            if not name or not path:
                raise MAQError(f"--tasks {s!r}: expected name=path (e.g. arc_easy=ARC-Easy-test.json)")
            if not Path(path).exists():
                raise MAQError(f"--tasks {s}: {path} not found")
            out.append((canonical_task(name) or name, Path(path)))
            continue
        p = Path(s)
        if not p.exists() and qa is not None:
            if s == "qa":
                p = qa
            elif canonical_task(s):
                p = qa / QA_FOLDERS[canonical_task(s)]
        if p.is_dir() and any((p / f).is_dir() for f in QA_FOLDERS.values()):
            out += [(t, p / f) for t, f in QA_FOLDERS.items() if (p / f).is_dir()]
        elif p.exists() and (canonical_task(p.name) or p.is_file() and canonical_task(p.parent.name)):
            out.append((canonical_task(p.name) or canonical_task(p.parent.name), p))
        else:
            where = f" (looked in {qa})" if qa is not None else ""
            raise MAQError(f"--tasks {s!r}: not a task folder, the qa folder or name=path{where}; tasks: "
                           f"{', '.join(TASKS)}")
    seen: set[str] = set()
    for t, _ in out:
        if t in seen:
            raise MAQError(f"--tasks: task {t} given twice")
        seen.add(t)
    return out


def parse_tasks(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``name=path`` pairs (``resolve_tasks`` without a data folder)."""
    return [(n, str(p)) for n, p in resolve_tasks(specs)]


# ---------------------------------------------------------------------------------------------- Table 3
def table3(run: dict, reference: str = "reference") -> str:
    """The paper's Table 3 shape from a results file's rows: per task acc / acc_norm (%), the 7-task averages of acc
    and of acc_norm (acc where the harness reports acc only), and the difference of the acc average to the
    ``reference`` row's. The item counts are in the header (first N of the shipped first half)."""
    rows = [r for r in run.get("rows", []) if r.get("zeroshot")]
    if not rows:
        return "_no zero-shot measurements in this run_"
    tasks = [t for t in QA_FOLDERS if any(t in r["zeroshot"] for r in rows)]
    tasks += sorted({t for r in rows for t in r["zeroshot"]} - set(tasks))

    def counts(t):
        ns = sorted({(r["zeroshot"][t]["n"], r["zeroshot"][t].get("of")) for r in rows if t in r["zeroshot"]})
        return ", ".join(f"{n}/{of}" if of else str(n) for n, of in ns)

    head = ["configuration", "linear bits/w"] + [f"{LABELS.get(t, t)} ({counts(t)})" for t in tasks] \
        + ["avg acc", "avg acc_norm*", "Δ avg acc"]
    out = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]

    def avgs(r):
        z = r["zeroshot"]
        if not all(t in z for t in tasks):
            return None, None
        acc = [z[t]["acc"] for t in tasks]
        norm = [z[t]["acc_norm"] if z[t].get("acc_norm") is not None else z[t]["acc"] for t in tasks]
        return 100 * sum(acc) / len(acc), 100 * sum(norm) / len(norm)

    ref = next((avgs(r)[0] for r in rows if r["name"] == reference), None)
    for r in rows:
        cells = []
        for t in tasks:
            z = r["zeroshot"].get(t)
            if not z:
                cells.append("—")
                continue
            cells.append(f"{100 * z['acc']:.1f}" + (f" / {100 * z['acc_norm']:.1f}" if z.get("acc_norm")
                                                    is not None else ""))
        a, an = avgs(r)
        bpw = (r.get("bpw") or {}).get("linear")
        d = "—" if a is None or ref is None or r["name"] == reference else f"{a - ref:+.1f}"
        out.append(f"| {r['name']} | {'—' if bpw is None else f'{bpw:.3f}'} | " + " | ".join(cells)
                   + f" | {'—' if a is None else f'{a:.1f}'} | {'—' if an is None else f'{an:.1f}'} | {d} |")
    out.append("")
    out.append("Cells: acc / acc_norm in % (acc only where lm-evaluation-harness reports acc only: BoolQ, WinoGrande). "
               "*avg acc_norm averages acc_norm where reported, else acc. Column headers: items scored / items in "
               "the shipped first half of the official split.")
    return "\n".join(out)
