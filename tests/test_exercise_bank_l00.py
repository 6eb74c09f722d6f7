"""Lesson 00's exercises pass with their solutions and fail, with a useful message, with the usual mistakes."""

import torch

from lmlab import pretrained
from lmlab.exercises import check, names


def stub(*args):
    raise NotImplementedError("your code here")


def test_lesson_00_has_its_exercises():
    assert names("00.") == ["00.logits_by_hand", "00.most_likely_after_window", "00.next_token_probs"]


def test_next_token_probs_passes_with_the_reference():
    assert check("00.next_token_probs", lambda logits: torch.softmax(logits[:, -1, :], dim=1))


def test_next_token_probs_stub_fails_cleanly_with_the_nudge():
    message = repr(check("00.next_token_probs", stub))
    assert "case 1 of 4" in message and "NotImplementedError: your code here" in message
    assert "hint 1 of 3" in message and "softmax(dim=-1)" not in message  # the nudge, not the recipe


def test_next_token_probs_fails_over_the_batch_axis():
    result = check("00.next_token_probs", lambda logits: logits[:, -1].softmax(dim=0))
    assert not result and "case 1 of 4" in repr(result) and "expected" in repr(result)


def test_next_token_probs_fails_at_the_first_position():
    result = check("00.next_token_probs", lambda logits: logits[:, 0].softmax(dim=-1))
    assert not result and "case 1 of 4" in repr(result)


def test_next_token_probs_fails_when_exp_overflows():
    def naive(logits):
        e = logits[:, -1].exp()
        return e / e.sum(dim=-1, keepdim=True)

    result = check("00.next_token_probs", naive)
    assert not result and "case 4 of 4" in repr(result) and "overflows" in repr(result)


def test_next_token_probs_fails_when_the_input_is_changed_in_place():
    def in_place(logits):
        return logits[:, -1].sub_(logits[:, -1].max(dim=-1, keepdim=True).values).softmax(dim=-1)

    result = check("00.next_token_probs", in_place)
    assert not result and "in place" in repr(result)


def test_most_likely_after_window_is_the_models_argmax():
    model, tok = pretrained.load("shakespeare-char")
    ids = torch.tensor([tok.encode("ROMEO:\nBut soft, what light through yonder window brea")])
    with torch.no_grad():
        top2 = model(ids)[0, -1].topk(2).indices.tolist()
    assert check("00.most_likely_after_window", tok.id_to_token(top2[0]))
    wrong = check("00.most_likely_after_window", tok.id_to_token(top2[1]))
    assert not wrong and repr(tok.id_to_token(top2[0])) not in repr(wrong)  # the answer is not given away
    assert not check("00.most_likely_after_window", top2[0])  # the id, not the character


def test_most_likely_after_window_stub_fails_with_the_nudge_only():
    message = repr(check("00.most_likely_after_window", None))
    assert "got NoneType" in message and "hint 1 of 3" in message and "argmax" not in message


def by_hand(model, ids, positions=True, final_norm=True, blocks=None):
    x = model.tok_emb(ids)
    if positions == "ids":
        x = x + model.pos_emb(ids)
    elif positions:
        x = x + model.pos_emb(torch.arange(ids.shape[1]))
    for block in list(model.blocks)[:blocks]:
        x = block(x)
    return model.head(model.ln_f(x) if final_norm else x)


def test_logits_by_hand_passes_when_written_out():
    assert check("00.logits_by_hand", by_hand)


def test_logits_by_hand_stub_fails_cleanly():
    result = check("00.logits_by_hand", stub)
    assert not result and "NotImplementedError" in repr(result) and "GPT(vocab_size=7, n_layer=2" in repr(result)


def test_logits_by_hand_fails_without_the_positions():
    result = check("00.logits_by_hand", lambda m, ids: by_hand(m, ids, positions=False))
    assert not result and "case 1 of 5" in repr(result)


def test_logits_by_hand_fails_with_the_ids_as_positions():
    assert not check("00.logits_by_hand", lambda m, ids: by_hand(m, ids, positions="ids"))


def test_logits_by_hand_fails_without_the_final_norm():
    assert not check("00.logits_by_hand", lambda m, ids: by_hand(m, ids, final_norm=False))


def test_logits_by_hand_fails_with_a_fixed_number_of_blocks():
    result = check("00.logits_by_hand", lambda m, ids: by_hand(m, ids, blocks=2))  # the lesson's model has 4
    assert not result and "case 3 of 5" in repr(result) and "3 blocks" in repr(result)


def test_logits_by_hand_fails_for_a_first_row_only_answer():
    result = check("00.logits_by_hand", lambda m, ids: by_hand(m, ids[:1]))
    assert not result and "case 2 of 5" in repr(result)
