"""Zero-shot scorer: the public task formats, lm-eval's acc / acc_norm, and log-likelihoods through maq.Llama."""
from __future__ import annotations

import json

import numpy as np
import pytest

from maq.errors import MAQError
from maq.evaluation import zeroshot as Z

LINES = {
    "arc_easy": {"id": "x", "question": "Which is a mammal?",
                 "choices": {"text": ["shark", "whale", "trout"], "label": ["A", "B", "C"]}, "answerKey": "B"},
    "arc_challenge": {"question": "Q?", "choices": {"text": ["a", "b", "c", "d"], "label": ["1", "2", "3", "4"]},
                      "answerKey": "4"},
    "openbookqa": {"id": "7", "question_stem": "The sun is", "choices": {"text": ["hot", "cold"],
                                                                         "label": ["A", "B"]}, "answerKey": "A"},
    "piqa": {"goal": "Open a jar", "sol1": "twist the lid", "sol2": "eat the lid", "label": 0},
    "hellaswag": {"activity_label": "Baking", "ctx_a": "She mixes flour.", "ctx_b": "then she",
                  "endings": ["bakes it [title] now.", "flies away.", "sings.", "sleeps."], "label": "0"},
    "winogrande": {"sentence": "The trophy didn't fit in the case because the _ was too big.",
                   "option1": "trophy", "option2": "case", "answer": "1"},
    "boolq": {"question": "is water wet", "passage": "Water is a liquid.", "label": 1},
}


def _write(tmp_path, name, docs):
    p = tmp_path / f"{name}.jsonl"
    p.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return p


@pytest.mark.parametrize("name", sorted(LINES))
def test_formats_by_name_and_by_fields(tmp_path, name):
    p = _write(tmp_path, name, [LINES[name]])
    fmt_name, docs = Z.load_task(name, p)
    assert fmt_name == name
    fields_only, _ = Z.load_task("mytask", p)        # unknown name: detected from the fields
    assert fields_only == {"arc_challenge": "arc_easy"}.get(name, name)
    assert len(docs) == 1


def test_prompts_as_the_harness_builds_them(tmp_path):
    arc = Z.load_task("arc_easy", _write(tmp_path, "a", [LINES["arc_easy"]]))[1][0]
    assert arc.requests() == [("Question: Which is a mammal?\nAnswer:", " shark"),
                              ("Question: Which is a mammal?\nAnswer:", " whale"),
                              ("Question: Which is a mammal?\nAnswer:", " trout")]
    assert arc.gold == 1
    assert Z.load_task("arc_challenge", _write(tmp_path, "c", [LINES["arc_challenge"]]))[1][0].gold == 3
    hs = Z.load_task("hellaswag", _write(tmp_path, "h", [LINES["hellaswag"]]))[1][0]
    assert hs.contexts == ["Baking: She mixes flour. Then she"] and hs.choices[0] == "bakes it. now."
    wg = Z.load_task("winogrande", _write(tmp_path, "w", [LINES["winogrande"]]))[1][0]
    assert wg.requests() == [("The trophy didn't fit in the case because the trophy", " was too big."),
                             ("The trophy didn't fit in the case because the case", " was too big.")]
    assert wg.gold == 0 and wg.multiple_input
    bq = Z.load_task("boolq", _write(tmp_path, "b", [LINES["boolq"]]))[1][0]
    assert bq.requests()[1] == ("Water is a liquid.\nQuestion: is water wet?\nAnswer:", " yes") and bq.gold == 1
    bq2 = Z.load_task("boolq", _write(tmp_path, "b2", [{"question": "q", "passage": "p", "answer": False}]))[1][0]
    assert bq2.gold == 0
    ob = Z.load_task("openbookqa", _write(tmp_path, "o", [LINES["openbookqa"]]))[1][0]
    assert ob.requests()[0] == ("The sun is", " hot")


def test_bad_items(tmp_path):
    with pytest.raises(MAQError, match="not a piqa item"):
        Z.load_task("piqa", _write(tmp_path, "p", [{"goal": "x", "sol1": "a"}]))
    with pytest.raises(MAQError, match="outside"):
        Z.load_task("piqa", _write(tmp_path, "p2", [{**LINES["piqa"], "label": 5}]))
    with pytest.raises(MAQError, match="cannot tell its format"):
        Z.load_task("mystery", _write(tmp_path, "m", [{"foo": 1}]))
    with pytest.raises(MAQError, match="name=path"):
        Z.parse_tasks(["no_such_task"])


class FakeScorer:
    """Log-likelihoods from a table {(context, continuation): ll}."""

    def __init__(self, table):
        self.table = table

    def loglikelihood(self, context, continuation):
        return self.table[(context, continuation)]


def test_acc_and_acc_norm_as_lm_eval():
    # the short wrong choice has the largest total log-likelihood (acc picks it); per character of the choice
    # the long gold one wins (acc_norm): -3/4 = -0.75 > -2/1 > -8/3
    doc = Z.Doc(["Q"], ["a", "bbbb", "ccc"], gold=1)
    sc = FakeScorer({("Q", " a"): -2.0, ("Q", " bbbb"): -3.0, ("Q", " ccc"): -8.0})
    r = Z.score_doc(sc, doc)
    assert (r["acc"], r["acc_norm"]) == (0.0, 1.0)
    sc.table[("Q", " a")] = -4.0
    r = Z.evaluate(sc, [doc, doc], "arc_easy")
    assert (r["acc"], r["acc_norm"], r["n"]) == (1.0, 1.0, 2) and r["acc_stderr"] == 0.0


def test_winogrande_reports_acc_only():
    doc = Z.Doc(["A x", "A y"], ["rest"], gold=1, multiple_input=True)
    r = Z.evaluate(FakeScorer({("A x", " rest"): -3.0, ("A y", " rest"): -1.0}), [doc], "winogrande")
    assert r["acc"] == 1.0 and r["acc_norm"] is None


def test_split_pair_moves_trailing_spaces():
    assert Z.split_pair("Answer: ", "yes") == ("Answer:", " yes")
    assert Z.split_pair("Answer:", " yes") == ("Answer:", " yes")


def test_llama_scorer_equals_direct_forward(tiny_f32):
    """The continuation's log-likelihood through create_completion(echo, logprobs) equals log-softmax of the
    engine's own logits at the right positions (an off-by-one would fail)."""
    from maq.runtime import model as M
    from maq.runtime.api import Llama
    from maq.runtime.sampling import log_softmax

    llm = Llama(str(tiny_f32), n_ctx=256, n_threads=1, verbose=False)
    sc = Z.LlamaScorer(llm)
    ctx, cont = "The cat sat on the", " mat and purred loudly."
    prompt, n_cont = sc.tokens(ctx, cont)
    assert n_cont >= 3 and prompt[-n_cont:] == llm.tokenize((ctx + cont).encode())[-n_cont:]
    got = sc.loglikelihood(ctx, cont)
    llm.reset()
    logits = llm.model.forward(np.asarray(prompt, np.int32), 0, M.LOGITS_ALL)
    n = len(prompt)
    want = sum(float(log_softmax(logits[p - 1])[prompt[p]]) for p in range(n - n_cont, n))
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
    wrong = sum(float(log_softmax(logits[p])[prompt[p]]) for p in range(n - n_cont, n - 1))
    assert abs(got - wrong) > 1e-3


EASY = [("Question: What color is the sky on a clear day?\nAnswer:", ["blue", "green", "purple", "brown"]),
        ("Question: What is the capital of France?\nAnswer:", ["Paris", "Tokyo", "Canberra", "Nairobi"]),
        ("Question: Which animal says moo?\nAnswer:", ["a cow", "a snake", "a fish", "a spider"]),
        ("Question: What do bees make?\nAnswer:", ["honey", "steel", "plastic", "glass"]),
        ("Question: What is 2 + 2?\nAnswer:", ["4", "9", "17", "40"]),
        ("Question: Which planet do we live on?\nAnswer:", ["Earth", "Neptune", "Pluto", "the Sun"])]


def test_smollm2_scores_trivial_items(smollm2_gguf, tmp_path):
    """SmolLM2-135M must answer trivially easy ARC-format items (gold first in the file, shuffled here)."""
    from maq.runtime.api import Llama

    rng = np.random.default_rng(0)
    docs = []
    for q, ch in EASY:
        order = rng.permutation(len(ch))
        labels = "ABCD"[:len(ch)]
        docs.append({"question": q.split("Question: ")[1].split("\n")[0],
                     "choices": {"text": [ch[i] for i in order], "label": list(labels)},
                     "answerKey": labels[int(np.where(order == 0)[0][0])]})
    _, items = Z.load_task("arc_easy", _write(tmp_path, "easy", docs))
    llm = Llama(str(smollm2_gguf), n_ctx=256, n_threads=2, verbose=False)
    r = Z.evaluate(Z.LlamaScorer(llm), items, "arc_easy")
    assert r["acc"] == 1.0
    margins = [it["lls"][it["gold"]] - max(v for j, v in enumerate(it["lls"]) if j != it["gold"])
               for it in r["items"]]
    assert min(margins) > 1.0
