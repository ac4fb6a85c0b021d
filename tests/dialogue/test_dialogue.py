"""The dialogue model: reading, the response-only loss mask, windows, history truncation, and chat end to end."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import attnkit
from attnkit.data.dialogue import (
    DialogueTokens, Turn, collate, make_example, read_dialogues, truncate_history, turn_sequence, windows,
)
from attnkit.models.gpt import GPTConfig
from attnkit.training.dialogue import Chat, DialogueTask, dialogue_tokenizer

SEG0, SEG1, EOT = 90, 91, 99
SPECIAL = DialogueTokens(eot=EOT, segments=(SEG0, SEG1))


def test_read_lines_and_play_formats():
    lines = "A: hello there\nB: hi\n\n\nhow are you?\nfine: thanks\n"
    assert read_dialogues(lines, "lines") == [
        [Turn("A", "hello there"), Turn("B", "hi")], [Turn(None, "how are you?"), Turn("fine", "thanks")],
    ]
    play = "First Citizen:\nBefore we proceed,\nhear me.\n\nAll:\nSpeak, speak.\n\nA line alone\n"
    assert read_dialogues(play, "play") == [
        [Turn("First Citizen", "Before we proceed, hear me."), Turn("All", "Speak, speak."), Turn(None, "A line alone")],
    ]
    assert Turn("All", "Speak.").render() == "All: Speak."


def test_loss_mask_is_exactly_the_response_tokens():
    turns = [[10, 11], [20], [30, 31, 32]]
    ids, targets = make_example(turns, SPECIAL)
    full = [SEG0, 10, 11, EOT, SEG1, 20, EOT, SEG0, 30, 31, 32, EOT]
    assert ids == full[:-1]
    # hand-built: the targets at the positions predicting 20, its EOT, 30, 31, 32 and the last EOT; nothing else
    expected = [-100] * 11
    for pos, tok in ((4, 20), (5, EOT), (7, 30), (8, 31), (9, 32), (10, EOT)):
        expected[pos] = tok
    assert targets == expected
    assert full[5] == 20 and full[6] == EOT  # target t is token t + 1


def test_task_loss_is_cross_entropy_over_the_responses_only():
    torch.manual_seed(0)
    model = attnkit.GPT(GPTConfig(vocab_size=100, context=32, d_model=16, n_heads=2, n_layers=1))
    examples = [make_example([[10, 11], [20, 21, 22]], SPECIAL), make_example([[12], [13], [14, 15]], SPECIAL)]
    task = DialogueTask(examples, examples, batch_size=2, pad_id=0)
    batch = collate(examples, 0)
    loss, n = task.loss(model, batch)
    logits = model(batch.ids).logits
    picked = [(b, t, y) for b, (_, ys) in enumerate(examples) for t, y in enumerate(ys) if y != -100]
    reference = F.cross_entropy(torch.stack([logits[b, t] for b, t, _ in picked]), torch.tensor([y for *_, y in picked]))
    torch.testing.assert_close(loss, reference)
    assert int(n) == len(picked) == 4 + 5


def test_windows_hold_whole_turns_and_predict_each_turn_once():
    turns = [[i] * n for i, n in enumerate([3, 5, 2, 6, 1, 4, 6, 2], start=1)]  # at most (16 + 1) // 2 - 2 = 6
    context = 16
    ws = list(windows(turns, context))
    starts = []
    for w in ws:
        assert len(turn_sequence(w, SPECIAL)[0]) <= context + 1 and len(w) >= 2
        i = next(k for k in range(len(turns)) if turns[k : k + len(w)] == w)  # consecutive whole turns
        starts.append((i, i + len(w)))
    responses = [k for a, b in starts for k in range(a + 1, b)]
    assert sorted(responses) == list(range(1, len(turns)))  # every turn but the first, once
    assert all(b - 1 == a2 for (_, b), (a2, _) in zip(starts, starts[1:]))  # each starts at the last turn of the one before
    assert list(windows([[1] * 9, [2] * 20], context)) == [[[1] * 6, [2] * 6]]  # longer turns: their first 6 tokens


def test_history_truncation_keeps_whole_recent_turns():
    history = [[1] * 5, [2] * 3, [3] * 4, [4] * 2]
    # costs: turn + 2 each, the reply's segment 1: newest first 4, 6, 5, 7
    assert truncate_history(history, 1 + 4 + 6 + 5) == history[1:]
    assert truncate_history(history, 1 + 4 + 6 + 5 - 1) == history[2:]
    assert truncate_history(history, 100) == history
    assert truncate_history(history, 100, max_turns=2) == history[2:]
    assert truncate_history([[7] * 10], 6) == [[7] * 3]  # the newest alone too long: its last tokens
    prompt, _ = turn_sequence(history[2:], SPECIAL, respond=True)
    assert prompt == [SEG0, 3, 3, 3, 3, EOT, SEG1, 4, 4, EOT, SEG0]


def test_chat_keeps_its_history_inside_the_context():
    tok = dialogue_tokenizer(["abc def"], "char", 4096)
    torch.manual_seed(0)
    model = attnkit.GPT(GPTConfig(vocab_size=tok.get_vocab_size(), context=24, d_model=16, n_heads=2, n_layers=1)).eval()
    from attnkit.generation.sampling import SamplingConfig

    chat = Chat(model, tok, SamplingConfig(max_new_tokens=8, temperature=0), max_turns=3)
    for line in ("abc", "def abc", "a b c d e f", "ab"):
        chat.reply(line)
        prompt = chat.prompt()
        assert len(prompt) <= chat.budget
        kept = truncate_history(chat.history, chat.budget, 3)
        assert kept == chat.history[len(chat.history) - len(kept):]  # a suffix of whole turns
        assert prompt == turn_sequence(kept, chat.special, respond=True)[0]


def test_train_dialogue_then_chat_is_deterministic_with_a_seed(tmp_path, capsys):
    from attnkit.cli.main import main

    text = "\n\n".join("\n".join(f"{'AB'[i % 2]}: {w} number {k}" for i, w in enumerate(["hello", "hi there", "how now", "fine"]))
                       for k in range(12))
    (tmp_path / "d.txt").write_text(text, encoding="utf-8")
    sets = ["model.n_layers=1", "model.n_heads=2", "model.d_model=16", "model.context=64", "train.steps=3", "train.batch_size=4",
            "train.schedule.warmup=1", "train.eval.every=3", "train.log_every=3", "train.device=cpu"]
    argv = ["train", "dialogue", "--text", str(tmp_path / "d.txt"), "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(argv + [x for s in sets for x in ("--set", s)]) == 0
    (tmp_path / "in.txt").write_text("A: hello\n\nA: how now\nA: and then\n", encoding="utf-8")
    outs = []
    for _ in range(2):
        capsys.readouterr()
        assert main(["chat", "--model", str(tmp_path / "run" / "model"), "--input", str(tmp_path / "in.txt"), "--seed", "3",
                     "--max-new-tokens", "12", "--max-turns", "4", "--device", "cpu"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and len(outs[0].splitlines()) == 3  # one reply a non-empty line
