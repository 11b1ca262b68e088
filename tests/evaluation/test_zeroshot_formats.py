"""The seven zero-shot sets read in their official file formats (tiny copies built here with the shipped layout),
``--tasks`` resolution, and one pass over the real shipped files when ../shared/data/qa exists."""
from __future__ import annotations

import bz2
import json
from pathlib import Path

import pytest

from maq.errors import MAQError
from maq.evaluation import zeroshot as Z

ROOT = Path(__file__).resolve().parents[2]
SHARED_QA = ROOT.parent / "shared" / "data" / "qa"
# README of shared/data/qa: items in the first half of each official split
SHIPPED = {"arc_challenge": 586, "arc_easy": 1188, "boolq": 1635, "hellaswag": 5021, "openbookqa": 250,
           "piqa": 919, "winogrande": 633}


def _jsonl(path: Path, recs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


@pytest.fixture()
def qa(tmp_path) -> Path:
    """A data/qa folder with two items per task, each in the layout the shared copy ships."""
    root = tmp_path / "qa"
    arc = lambda i, key: {"id": f"M_{i}", "question": {"stem": f"Stem {i}?", "choices": [  # noqa: E731
        {"text": t, "label": lab} for t, lab in zip(["w", "x", "y", "z"], "ABCD")]}, "answerKey": key}
    _jsonl(root / "arc-challenge" / "ARC-Challenge-Test.jsonl", [arc(0, "C"), arc(1, "A")])
    (root / "arc-easy").mkdir()
    (root / "arc-easy" / "ARC-Easy-test.json").write_text(json.dumps([
        {"id": "e0", "question": "Easy?", "choices": {"text": ["no way", "sure"], "label": ["1", "2"]},
         "answerKey": "2"},
        {"id": "e1", "question": "Easy 2?", "choices": {"text": ["a", "b", "c"], "label": ["A", "B", "C"]},
         "answerKey": "B"}], indent=1))
    _jsonl(root / "boolq" / "dev.jsonl", [
        {"question": "is it true", "title": "T", "answer": True, "passage": "It is."},
        {"question": "is it false", "title": "T", "answer": False, "passage": "No."}])
    (root / "hellaswag").mkdir()
    text = ("Roof shingle removal: A man is sitting on a roof. he\n3\nis a.\nis b.\nis c.\nstarts pulling.\n"
            "Clean and jerk: A lady walks. the lady\n0\nlifts  it.\npulls.\nswings.\nstands.\n")
    (root / "hellaswag" / "hellaswag_val_half.txt.bz2").write_bytes(bz2.compress(text.encode()))
    _jsonl(root / "openbookqa" / "test.jsonl", [arc(0, "B") | {"id": "8-1"}, arc(1, "D") | {"id": "8-2"}])
    _jsonl(root / "piqa" / "valid.jsonl", [{"goal": "Open a jar", "sol1": "twist", "sol2": "bite"},
                                           {"goal": "dresser", "sol1": "a ", "sol2": "b"}])
    (root / "piqa" / "valid-labels.lst").write_text("0\n1\n")
    _jsonl(root / "winogrande" / "dev.jsonl", [
        {"qID": "q1", "sentence": "Sarah beat Maria so _ won.", "option1": "Sarah", "option2": "Maria",
         "answer": "1"},
        {"qID": "q2", "sentence": "Sarah beat Maria so _ lost.", "option1": "Sarah", "option2": "Maria",
         "answer": "2"}])
    (root / "winogrande" / "dev-labels.lst").write_text("1\n2\n")
    return root


def test_all_seven_by_folder(qa):
    tasks = Z.resolve_tasks(["qa"], qa.parent)
    assert [t for t, _ in tasks] == list(Z.QA_FOLDERS) and len(tasks) == 7
    assert Z.resolve_tasks([str(qa)]) == tasks                      # the folder itself, no data dir
    got = {t: Z.load_task(t, p) for t, p in tasks}
    assert all(fmt == t for t, (fmt, _) in got.items())
    assert all(len(docs) == 2 for _, docs in got.values())
    assert [d.gold for d in got["arc_challenge"][1]] == [2, 0]
    assert got["arc_challenge"][1][0].requests()[0] == ("Question: Stem 0?\nAnswer:", " w")
    assert [d.gold for d in got["arc_easy"][1]] == [1, 1]           # numeric labels "1".."n"
    assert got["arc_easy"][1][1].requests()[2] == ("Question: Easy 2?\nAnswer:", " c")
    assert [d.gold for d in got["openbookqa"][1]] == [1, 3]
    assert got["openbookqa"][1][0].requests()[0] == ("Stem 0?", " w")  # official layout: the stem alone
    assert [d.gold for d in got["boolq"][1]] == [1, 0]
    assert got["boolq"][1][0].requests()[1] == ("It is.\nQuestion: is it true?\nAnswer:", " yes")
    assert [d.gold for d in got["piqa"][1]] == [0, 1]                  # from valid-labels.lst
    assert got["piqa"][1][0].requests() == [("Question: Open a jar\nAnswer:", " twist"),
                                            ("Question: Open a jar\nAnswer:", " bite")]
    hs = got["hellaswag"][1]
    assert [d.gold for d in hs] == [3, 0]
    assert hs[0].requests()[3] == ("Roof shingle removal: A man is sitting on a roof. he", " starts pulling.")
    assert hs[1].choices[0] == "lifts it."                             # lm-eval's preprocess (double spaces)
    wg = got["winogrande"][1]
    assert [d.gold for d in wg] == [0, 1]
    assert wg[1].requests() == [("Sarah beat Maria so Sarah", " lost."), ("Sarah beat Maria so Maria", " lost.")]


def test_task_names_folders_and_limit(qa):
    assert Z.resolve_tasks(["arc-easy", "piqa"], qa.parent) == [("arc_easy", qa / "arc-easy"), ("piqa", qa / "piqa")]
    assert Z.resolve_tasks([str(qa / "winogrande")]) == [("winogrande", qa / "winogrande")]
    f = qa / "arc-challenge" / "ARC-Challenge-Test.jsonl"
    assert Z.resolve_tasks([str(f)]) == [("arc_challenge", f)]
    assert Z.resolve_tasks([f"obqa={qa / 'openbookqa'}"]) == [("openbookqa", qa / "openbookqa")]
    assert len(Z.load_task("hellaswag", qa / "hellaswag", limit=1)[1]) == 1
    assert Z.count_items(qa / "hellaswag") == 2
    with pytest.raises(MAQError, match="given twice"):
        Z.resolve_tasks(["piqa", "piqa"], qa.parent)
    with pytest.raises(MAQError, match="not a task folder"):
        Z.resolve_tasks(["nonsense"], qa.parent)


def test_acc_norm_divides_by_bytes():
    doc = Z.Doc(["Q"], ["é", "ab"], gold=0)
    assert doc.norm_lengths() == [2.0, 2.0]


def test_bad_files_name_the_file_and_item(qa):
    (qa / "piqa" / "valid-labels.lst").write_text("0\n")
    with pytest.raises(MAQError, match="1 labels for 2 items"):
        Z.load_task("piqa", qa / "piqa")
    (qa / "winogrande" / "dev-labels.lst").write_text("2\n2\n")
    with pytest.raises(MAQError, match="dev-labels.lst:1: label '2'"):
        Z.load_task("winogrande", qa / "winogrande")
    bad = "ctx\n7\na\nb\nc\nd\n"
    (qa / "hellaswag" / "hellaswag_val_half.txt.bz2").write_bytes(bz2.compress(bad.encode()))
    with pytest.raises(MAQError, match=r"hellaswag_val_half.txt.bz2:2: gold answer '7'"):
        Z.load_task("hellaswag", qa / "hellaswag")
    (qa / "hellaswag" / "hellaswag_val_half.txt.bz2").write_bytes(bz2.compress(b"ctx\n1\na\n"))
    with pytest.raises(MAQError, match="6 per task"):
        Z.load_task("hellaswag", qa / "hellaswag")
    (qa / "boolq" / "extra.json").write_text("[]")
    with pytest.raises(MAQError, match="expected one data file"):
        Z.load_task("boolq", qa / "boolq")
    (qa / "arc-easy" / "ARC-Easy-test.json").write_text('[{"question": "q", "choices": {"text": ["a"], '
                                                       '"label": ["A"]}, "answerKey": "E"}]')
    with pytest.raises(MAQError, match="item 1: not a arc_easy item"):
        Z.load_task("arc_easy", qa / "arc-easy")


@pytest.mark.skipif(not SHARED_QA.is_dir(), reason="../shared/data/qa not present")
def test_the_shipped_sets_read_as_shipped():
    """Every shipped file parses whole, with the README's item counts and every gold answer in range."""
    tasks = Z.resolve_tasks(["qa"], SHARED_QA.parent)
    assert [t for t, _ in tasks] == list(Z.QA_FOLDERS)
    for t, p in tasks:
        fmt, docs = Z.load_task(t, p)
        assert fmt == t and len(docs) == SHIPPED[t], t
        n_choices = {len(d.requests()) for d in docs}
        assert n_choices <= {2, 3, 4, 5}, (t, n_choices)
        golds = {d.gold for d in docs}
        assert len(golds) > 1, t                                         # not all the same answer


def test_scorer_reuses_the_shared_context(tiny_f32):
    """Choices after a shared context re-use its K/V (fewer tokens run) and score exactly as a fresh forward."""
    import numpy as np

    from maq.runtime import model as M
    from maq.runtime.api import Llama
    from maq.runtime.sampling import log_softmax

    llm = Llama(str(tiny_f32), n_ctx=256, n_threads=1, verbose=False)
    sc = Z.LlamaScorer(llm)
    ctx = "Question: where did the quick brown fox jump over the lazy dog today?\nAnswer:"
    got = [sc.loglikelihood(ctx, c) for c in (" over the fence.", " into a river", " over the fence.")]
    prompt0, _ = sc.tokens(ctx, " over the fence.")
    assert sc.evaluated < 2 * len(prompt0)              # the context was run once
    assert got[0] == pytest.approx(got[2], abs=1e-5)
    for cont, g in zip((" over the fence.", " into a river"), got):
        prompt, n_cont = sc.tokens(ctx, cont)
        logits = llm.model.forward(np.asarray(prompt, np.int32), 0, M.LOGITS_ALL)
        n = len(prompt)
        want = sum(float(log_softmax(logits[p - 1])[prompt[p]]) for p in range(n - n_cont, n))
        assert g == pytest.approx(want, rel=1e-5, abs=1e-5)
