"""attnkit train unilm through the one run path: every batch carries one of the four masks, and finetune takes the model."""

from __future__ import annotations

import json

import attnkit
from attnkit.cli.main import main

TEXT = "".join(f"To be, or not to be, that is the question {i}:\nWhether 'tis nobler in the mind to suffer\n"
               f"The slings and arrows of outrageous fortune.\n\n" for i in range(30))
TINY = ["--set", "model.n_layers=1", "--set", "model.d_model=32", "--set", "model.n_heads=2", "--set", "train.steps=4", "--set", "train.batch_size=4", "--set", "train.eval.every=2",
        "--set", "train.schedule.warmup=1", "--set", "train.device=cpu", "--vocab-size", "120", "--max-seq-len", "24",
        "--set", "data.max_eval_pairs=8", "--set", "data.valid_fraction=0.1"]


def test_unilm_trains_and_finetunes(tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT)
    out = tmp_path / "run"
    assert main(["train", "unilm", "--text", str(tmp_path / "t.txt"), "--out", str(out), "--no-progress", *TINY,
                 "--set", "unilm.left_to_right=0", "--set", "unilm.right_to_left=0"]) == 0
    assert json.loads((out / "run_config.json").read_text())["unilm"]["left_to_right"] == 0
    assert type(attnkit.load(out / "model")).__name__ == "UnilmMLM"
    # attnkit generate reads each prompt as a source and prints its greedy seq2seq target, as unilm_generate decodes it
    from attnkit.data.wordpiece import WordPieceTokenizer
    from attnkit.generation.unilm import unilm_generate

    capsys.readouterr()
    assert main(["generate", "--model", str(out / "model"), "--prompt", "to be or not", "--prompt", "the question",
                 "--max-new-tokens", "4", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    tok, model = WordPieceTokenizer.from_file(out / "model"), attnkit.load(out / "model").eval()
    for line, text in zip(lines, ["to be or not", "the question"], strict=True):
        ids = unilm_generate(model, tok.tokenizer.encode(text, add_special_tokens=False).ids, cls_id=tok.cls_id, sep_id=tok.sep_id,
                             mask_id=tok.mask_id, max_new_tokens=4)
        assert line == tok.tokenizer.decode(ids)
    assert main(["generate", "--model", str(out / "model"), "--prompt", "to be", "--top-k", "5", "--device", "cpu"]) == 2
    assert "decodes greedily; drop --top-k" in capsys.readouterr().err
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"to be or not {i}\t{i % 2}\n" for i in range(16)))
    assert main(["finetune", "classify", "--model", str(out / "model"), "--train", str(tmp_path / "train.tsv"), "--dev",
                 str(tmp_path / "train.tsv"), "--out", str(tmp_path / "ft"), "--no-progress", "--set", "train.steps=2",
                 "--set", "train.device=cpu", "--set", "train.batch_size=8"]) == 0


def test_unilm_batches_carry_their_kind(tmp_path):
    from attnkit.runs import job, resolve_configs

    (tmp_path / "t.txt").write_text(TEXT)
    j = job("unilm")
    cfgs = resolve_configs(j, assignments=[f'data.text=["{tmp_path / "t.txt"}"]', "data.vocab_size=120", "data.max_seq_len=24",
                                           "train.batch_size=2", "train.device=cpu", "model.n_layers=1", "model.d_model=32",
                                           "model.n_heads=2"])
    prepared = j.prepare(cfgs, tmp_path / "out", resume=False, log=lambda s: None)
    kinds = {b.kind for b in prepared.task.batches(0, 0)}
    assert kinds == {"bidirectional", "seq2seq", "left_to_right", "right_to_left"}
