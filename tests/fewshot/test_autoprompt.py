"""AutoPrompt's gradient-guided candidates against autograd on one-hot inputs, a search that never moves uphill on its
batch, and ``finetune fewshot --patterns auto`` end to end."""

from __future__ import annotations

import json

import torch

import attnkit
from attnkit.cli.main import main
from attnkit.data.glue import read_classification_tsv
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.training import autoprompt, pet

LABELS = ["negative", "positive"]


def setup(tiny_mlm):
    tok = WordPieceTokenizer.from_file(tiny_mlm / "mlm")
    model = pet.mlm_of(attnkit.load(tiny_mlm / "mlm")).eval()
    data = pet.subset(read_classification_tsv(tiny_mlm / "train.tsv"), range(12))
    label_ids = pet.verbalizer_ids(tok, {"negative": "terrible", "positive": "great"})
    return tok, model, data, label_ids


def test_candidate_scores_are_the_gradient_at_a_one_hot_trigger(tiny_mlm):
    tok, model, data, label_ids = setup(tiny_mlm)
    triggers = tuple(tok.tokenizer.token_to_id(w) for w in ("the", "movie", "was"))
    pattern = pet.Pattern("{a} {t} [MASK] .", triggers=triggers)
    rows = pet.encode_cloze(tok, data, pattern, LABELS, 64)
    starts = [len(r) - 3 - 3 for r in rows.ids]  # ... {t} [MASK] . [SEP]
    index, slot = [0, 3, 5, 7], 1
    got = autoprompt.candidate_scores(model, rows, index, starts, slot, tok.pad_id, torch.tensor(label_ids), torch.device("cpu"))
    # reference: the trigger's embedding written as one_hot @ table, the loss differentiated with respect to each one-hot
    table = model.bert.embed.tokens.weight.detach()
    onehots = torch.nn.functional.one_hot(torch.tensor([triggers[slot]] * len(index)), table.shape[0]).float().requires_grad_(True)

    def swap(_m, _i, out):
        out = out.clone()
        for n, i in enumerate(index):
            out[n, starts[i] + slot] = onehots[n] @ table
        return out

    handle = model.bert.embed.tokens.register_forward_hook(swap)
    try:
        autoprompt.batch_loss(model, rows, index, tok.pad_id, torch.tensor(label_ids), torch.device("cpu")).backward()
    finally:
        handle.remove()
    assert torch.allclose(got, onehots.grad.mean(0), atol=1e-6)
    assert got.abs().max() > 0


def test_search_never_moves_uphill_and_skips_specials(tiny_mlm):
    tok, model, data, label_ids = setup(tiny_mlm)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start = pet.Pattern("{a} {t} [MASK] .", triggers=(tok.mask_id,) * 2)
    rows = pet.encode_cloze(tok, data, start, LABELS, 64)
    with torch.no_grad():
        initial = float(autoprompt.batch_loss(model, rows, range(len(rows)), tok.pad_id, torch.tensor(label_ids), torch.device("cpu")))
    pattern, history = autoprompt.search_triggers(model, tok, data, LABELS, label_ids, "{a} {t} [MASK] .", n_triggers=2, iters=6, k=5,
                                                  batch_size=len(data), max_len=64)
    assert len(history) == 6 and history[0] <= initial + 1e-6
    assert all(b <= a + 1e-6 for a, b in zip(history, history[1:]))
    assert history[-1] < initial  # something in the vocabulary beats [MASK] [MASK]
    assert not set(pattern.triggers) & set(tok.special_ids)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the masked LM is left as it was


def test_fewshot_patterns_auto_end_to_end(tiny_mlm, tmp_path, capsys):
    out = tmp_path / "auto"
    code = main([str(a) for a in ("finetune", "fewshot", "--model", tiny_mlm / "mlm", "--train", tiny_mlm / "train.tsv", "--test",
                                  tiny_mlm / "test.tsv", "--patterns", "auto", "--verbalizer", "negative=terrible,positive=great",
                                  "--shots", "4", "--seeds", "2", "--max-len", "24", "--out", out, "--no-progress",
                                  "--set", "train.device=cpu", "--set", "train.steps=2", "--set", "train.eval.every=1",
                                  "--set", "train.batch_size=4", "--set", "data.distill=false", "--set", "data.auto_iters=3",
                                  "--set", "data.auto_candidates=3")])
    assert code == 0, capsys.readouterr().err
    seeds = json.loads((out / "seeds.json").read_text())
    for s in seeds:
        assert len(s["autoprompt_triggers"]) == 3 and len(s["autoprompt_loss"]) == 3
        assert "zero_shot_accuracy" in s and s["accuracy"] == s["ensemble_accuracy"]
    assert "zero_shot_accuracy_mean" in json.loads((out / "eval.json").read_text())
