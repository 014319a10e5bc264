"""Token by token: what ftp trains on is what the chat template renders, with loss where it belongs.

Checked on SmolLM2-135M-Instruct's real tokenizer (its template adds a default system prompt
when a conversation has none) and on the tiny ChatML test tokenizer (which does not).
"""

import json
from pathlib import Path

import pytest

from ftp import UserError
from ftp.testing import CHATML_TEMPLATE, make_tiny_tokenizer
from ftp_builtin import tokenize
from ftp_builtin.formats.chat import Alpaca, Messages, ShareGPT
from ftp_builtin.tokenize import IGNORE

DATA = Path(__file__).parent / "data"


def _rows(name: str) -> list[dict]:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


# Every real row of every chat format, converted by the format itself.
CONVERSATIONS = {
    **{f"alpaca-{i}": Alpaca().convert(r) for i, r in enumerate(_rows("alpaca.json"))},
    "alpaca-system": Alpaca(Alpaca.Config(system_prompt="You are Nova.")).convert(
        _rows("alpaca.json")[3]),
    **{f"messages-{i}": Messages().convert(r) for i, r in enumerate(_rows("messages.json"))},
    **{f"sharegpt-{i}": ShareGPT().convert(r)
       for i, r in enumerate(_rows("sharegpt_toolcall.json"))},
}


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(params=[pytest.param("smollm2", marks=pytest.mark.slow), "tiny"])
def tok(request):
    if request.param == "smollm2":
        return request.getfixturevalue("smollm2_tokenizer")
    return request.getfixturevalue("tiny_tokenizer")


def template_ids(tokenizer, messages, **kw) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, **kw)
    if hasattr(out, "keys"):  # a BatchEncoding in recent transformers
        out = out["input_ids"]
    return list(out)


def oracle_labels(tokenizer, ids: list[int]) -> list[int]:
    """ChatML by hand: loss after each ``<|im_start|>assistant\\n``, through its ``<|im_end|>``."""
    header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    eos = tokenizer.eos_token_id
    labels = [IGNORE] * len(ids)
    i = 0
    while i < len(ids):
        if ids[i:i + len(header)] == header:
            start = i + len(header)
            end = ids.index(eos, start) + 1
            labels[start:end] = ids[start:end]
            i = end
        else:
            i += 1
    return labels


def loss_spans(row) -> list[tuple[int, int]]:
    """(start, end) of each run of tokens that carry loss."""
    spans, start = [], None
    for i, lab in enumerate([*row["labels"], IGNORE]):
        if lab != IGNORE and start is None:
            start = i
        elif lab == IGNORE and start is not None:
            spans.append((start, i))
            start = None
    return spans


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_input_ids_are_exactly_the_chat_template(tok, name):
    messages = CONVERSATIONS[name]["messages"]
    row = tokenize.conversation(tok, messages)
    assert row["input_ids"] == template_ids(tok, messages)
    assert len(row["labels"]) == len(row["input_ids"])


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_loss_is_on_each_assistant_answer_and_its_eos_only(tok, name):
    messages = CONVERSATIONS[name]["messages"]
    row = tokenize.conversation(tok, messages)
    ids, labels = row["input_ids"], row["labels"]
    assert labels == oracle_labels(tok, ids)
    # Every label that is not ignored is the token itself (no shifting, no substitutes).
    assert all(lab in (IGNORE, t) for t, lab in zip(ids, labels, strict=True))
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    spans = loss_spans(row)
    assert [tok.decode(ids[s:e]) for s, e in spans] == [a + tok.eos_token for a in answers]
    header = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    newline = tok.encode("\n", add_special_tokens=False)
    for s, e in spans:
        assert ids[e - 1] == tok.eos_token_id  # EOS carries loss: the model learns to stop
        assert ids[s - len(header):s] == header  # the header does not
        assert ids[e:e + len(newline)] == newline  # nor the newline after <|im_end|>


@pytest.mark.parametrize("name", ["messages-2", "sharegpt-2"])
def test_multi_turn_user_system_and_tool_turns_carry_no_loss(tok, name):
    messages = CONVERSATIONS[name]["messages"]
    row = tokenize.conversation(tok, messages)
    assistant_turns = sum(m["role"] == "assistant" for m in messages)
    assert assistant_turns >= 3
    assert len(loss_spans(row)) == assistant_turns
    labelled = tok.decode([t for t, lab in zip(row["input_ids"], row["labels"], strict=True)
                           if lab != IGNORE])
    for m in messages:
        if m["role"] != "assistant":
            assert m["content"] not in labelled


def test_assistant_only_false_puts_loss_on_every_token(tok):
    messages = CONVERSATIONS["sharegpt-0"]["messages"]
    row = tokenize.conversation(tok, messages, assistant_only=False)
    assert row["labels"] == row["input_ids"] == template_ids(tok, messages)


@pytest.mark.slow
def test_no_doubled_bos(smollm2_tokenizer):
    tok = smollm2_tokenizer
    for conv in CONVERSATIONS.values():
        ids = tokenize.conversation(tok, conv["messages"])["input_ids"]
        assert ids[:2] != [tok.bos_token_id] * 2
    ids = tokenize.text(tok, "Y.M. Molding Industry Mfg. Inc.")["input_ids"]
    assert ids[:2] != [tok.bos_token_id] * 2


def test_no_doubled_bos_when_the_tokenizer_adds_bos_and_the_template_too():
    """Llama-style: the tokenizer's post-processor adds BOS and the template starts with it."""
    from tokenizers import processors

    tok = make_tiny_tokenizer()
    bos = "<|endoftext|>"
    bos_id = tok.convert_tokens_to_ids(bos)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    tok.bos_token = bos
    tok.chat_template = "{{ bos_token }}" + CHATML_TEMPLATE
    assert tok("hi")["input_ids"][0] == bos_id
    messages = CONVERSATIONS["alpaca-2"]["messages"]
    ids = tokenize.conversation(tok, messages)["input_ids"]
    assert ids == template_ids(tok, messages)
    assert ids[0] == bos_id and ids[1] != bos_id and ids.count(bos_id) == 1
    text_ids = tokenize.text(tok, "Hello world")["input_ids"]
    assert text_ids[0] == bos_id and text_ids[1] != bos_id


def test_a_template_without_eos_gets_one_after_the_last_answer(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}"
                         "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    messages = CONVERSATIONS["alpaca-3"]["messages"]
    row = tokenize.conversation(tok, messages)
    assert row["input_ids"][-1] == row["labels"][-1] == tok.eos_token_id
    assert row["input_ids"][:-1] == template_ids(tok, messages)  # EOS added, nothing else
    answer = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != IGNORE]
    # The prompt's trailing space merges into the answer's first token (" The"), which must
    # still carry loss; then the turn as the template closes it (a newline), then the EOS.
    assert tok.decode(answer) == " " + messages[-1]["content"] + "\n" + tok.eos_token


@pytest.mark.slow
def test_an_answer_merging_with_the_header_keeps_its_first_token(smollm2_tokenizer):
    """'assistant\n' + '\n\nHi' tokenizes as 'assistant', '\n\n', '\n', 'Hi': no token lost."""
    tok = smollm2_tokenizer
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\n\nHi"}]
    row = tokenize.conversation(tok, messages)
    assert row["input_ids"] == template_ids(tok, messages)
    answer = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != IGNORE]
    assert tok.decode(answer) == "\n\n\nHi" + tok.eos_token


def test_a_tokenizer_without_a_chat_template_is_refused(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(UserError, match="no chat template"):
        tokenize.require_chat_template(tok)


# --- text -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["Y.M. Molding Industry Mfg. Inc.",
                                   "36 Packs per box.\nLook for Jersey Cards!",
                                   "ends with its own eos<|im_end|>"])
def test_text_ends_with_exactly_one_eos_and_learns_every_token(tok, value):
    row = tokenize.text(tok, value)
    ids = row["input_ids"]
    assert ids[-1] == tok.eos_token_id and ids[-2] != tok.eos_token_id
    assert row["labels"] == ids
    assert tok.decode(ids) == value.removesuffix(tok.eos_token) + tok.eos_token


# --- tokenize_records: shapes, truncation, dropping ---------------------------------------------


def test_records_of_each_shape(tok):
    conv = CONVERSATIONS["alpaca-3"]
    pc = {"prompt": "Sum up the numbers.\n\n3, 2, 5", "completion": "The sum of the numbers is 10."}
    out = tokenize.tokenize_records(tok, [conv, pc, {"text": "Hello world"}], max_length=None)
    assert (out.truncated, out.dropped, len(out.rows)) == (0, 0, 3)
    # A prompt/completion pair is the same conversation as its user/assistant messages.
    assert out.rows[1] == out.rows[0] == tokenize.conversation(tok, conv["messages"])
    assert out.rows[2] == tokenize.text(tok, "Hello world")
    assert out.tokens == sum(len(r["input_ids"]) for r in out.rows)
    assert out.loss_tokens == sum(sum(lab != IGNORE for lab in r["labels"][1:])
                                  for r in out.rows)
    with pytest.raises(UserError, match=r"cannot tokenize a record with keys \['chosen'\]"):
        tokenize.tokenize_records(tok, [{"chosen": "x"}], max_length=None)


def test_records_assistant_only_false(tok):
    out = tokenize.tokenize_records(tok, [CONVERSATIONS["messages-0"]], None,
                                    assistant_only=False)
    assert out.rows[0]["labels"] == out.rows[0]["input_ids"]


def test_truncation_keeps_what_is_left_to_learn_and_drops_the_rest(tok):
    conv = CONVERSATIONS["alpaca-3"]
    full = tokenize.conversation(tok, conv["messages"])
    n = len(full["input_ids"])
    answer_start = loss_spans(full)[0][0]

    # Fits exactly: untouched.
    out = tokenize.tokenize_records(tok, [conv], max_length=n)
    assert (out.truncated, out.dropped, out.rows) == (0, 0, [full])

    # Cut inside the answer: kept, counted, cut at max_length.
    cut = answer_start + 2
    out = tokenize.tokenize_records(tok, [conv, CONVERSATIONS["alpaca-0"]], max_length=cut)
    assert out.truncated >= 1 and out.dropped == 0
    assert out.rows[0] == {k: v[:cut] for k, v in full.items()}
    assert out.loss_tokens >= 2

    # Cut before the answer: nothing left to learn, so the row is dropped (and counted).
    out = tokenize.tokenize_records(tok, [conv], max_length=answer_start)
    assert (out.truncated, out.dropped, out.rows, out.tokens) == (1, 1, [], 0)

    # Plain text always has something to learn.
    out = tokenize.tokenize_records(tok, [{"text": "Hello world, how are you today?"}], 3)
    assert (out.truncated, out.dropped, len(out.rows[0]["input_ids"])) == (1, 0, 3)
