"""Token by token: what ftp trains on is what the chat template renders, with loss where it belongs.

Checked on SmolLM2-135M-Instruct's real tokenizer (its template adds a default system prompt
when a conversation has none, and knows nothing of tools) and on the tiny ChatML test
tokenizer (which does neither).
"""

import copy
import json
from pathlib import Path

import pytest

from ftp import IGNORE_INDEX, UserError
from ftp.testing import CHATML_TEMPLATE, make_tiny_tokenizer
from ftp_builtin import tokenize
from ftp_builtin.formats.chat import Alpaca, Messages, PromptCompletion, ShareGPT

DATA = Path(__file__).parent / "data"


def _rows(name: str) -> list[dict]:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


# Every real row of every chat format, converted by the format itself. The sharegpt rows are
# glaive_toolcall_en_demo.json rows: tools, function calls and observations.
CONVERSATIONS = {
    **{f"alpaca-{i}": Alpaca().convert(r) for i, r in enumerate(_rows("alpaca.json"))},
    "alpaca-system": Alpaca(Alpaca.Config(system_prompt="You are Nova.")).convert(
        _rows("alpaca.json")[3]),
    "alpaca-history": Alpaca().convert({**_rows("alpaca.json")[3], "history": [
        ["hi", "Hello! How can I help?"], ["Who are you?", "I am an assistant."]]}),
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


def record_ids(tokenizer, record) -> list[int]:
    """The template's ids for a record, tools shown as text where the template lacks them."""
    messages, tools = tokenize.for_template(tokenizer, record["messages"], record.get("tools"))
    return template_ids(tokenizer, messages, tools=tools)


def answers(record) -> list[str]:
    """What each assistant turn says: its text, or its tool calls as JSON lines."""
    out = []
    for m in record["messages"]:
        if m["role"] == "assistant":
            calls = [tokenize.tool_call_text(c) for c in m.get("tool_calls", [])]
            out.append("\n".join(([m["content"]] if m["content"] else []) + calls))
    return out


def oracle_labels(tokenizer, ids: list[int]) -> list[int]:
    """ChatML by hand: loss after each ``<|im_start|>assistant\\n``, through its ``<|im_end|>``."""
    header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    eos = tokenizer.eos_token_id
    labels = [IGNORE_INDEX] * len(ids)
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
    for i, lab in enumerate([*row["labels"], IGNORE_INDEX]):
        if lab != IGNORE_INDEX and start is None:
            start = i
        elif lab == IGNORE_INDEX and start is not None:
            spans.append((start, i))
            start = None
    return spans


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_input_ids_are_exactly_the_chat_template(tok, name):
    record = CONVERSATIONS[name]
    row = tokenize.conversation(tok, record["messages"], tools=record.get("tools"))
    assert row["input_ids"] == record_ids(tok, record)
    assert len(row["labels"]) == len(row["input_ids"])
    assert row["input_ids"][:2] != [tok.bos_token_id] * 2


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_loss_is_on_each_assistant_answer_and_its_eos_only(tok, name):
    record = CONVERSATIONS[name]
    row = tokenize.conversation(tok, record["messages"], tools=record.get("tools"))
    ids, labels = row["input_ids"], row["labels"]
    assert labels == oracle_labels(tok, ids)
    # Every label that is not ignored is the token itself (no shifting, no substitutes).
    assert all(lab in (IGNORE_INDEX, t) for t, lab in zip(ids, labels, strict=True))
    spans = loss_spans(row)
    assert [tok.decode(ids[s:e]) for s, e in spans] == [a + tok.eos_token
                                                        for a in answers(record)]
    header = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    newline = tok.encode("\n", add_special_tokens=False)
    for s, e in spans:
        assert ids[e - 1] == tok.eos_token_id  # EOS carries loss: the model learns to stop
        assert ids[s - len(header):s] == header  # the header does not
        assert ids[e:e + len(newline)] == newline  # nor the newline after <|im_end|>


@pytest.mark.parametrize("name", ["messages-2", "sharegpt-2", "alpaca-history"])
def test_multi_turn_user_system_and_tool_turns_carry_no_loss(tok, name):
    record = CONVERSATIONS[name]
    messages = record["messages"]
    row = tokenize.conversation(tok, messages, tools=record.get("tools"))
    assistant_turns = sum(m["role"] == "assistant" for m in messages)
    assert assistant_turns >= 3
    assert len(loss_spans(row)) == assistant_turns
    labelled = tok.decode([t for t, lab in zip(row["input_ids"], row["labels"], strict=True)
                           if lab != IGNORE_INDEX])
    for m in messages:
        if m["role"] != "assistant":
            assert m["content"] not in labelled


def test_assistant_only_false_puts_loss_on_every_token(tok):
    record = CONVERSATIONS["sharegpt-0"]
    row = tokenize.conversation(tok, record["messages"], assistant_only=False,
                                tools=record["tools"])
    assert row["labels"] == row["input_ids"] == record_ids(tok, record)


@pytest.mark.slow
def test_no_doubled_bos(smollm2_tokenizer):
    tok = smollm2_tokenizer
    for conv in CONVERSATIONS.values():
        ids = tokenize.conversation(tok, conv["messages"], tools=conv.get("tools"))["input_ids"]
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

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}"
                         "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    messages = CONVERSATIONS["alpaca-3"]["messages"]
    row = tokenize.conversation(tok, messages)
    assert row["input_ids"][-1] == row["labels"][-1] == tok.eos_token_id
    assert row["input_ids"][:-1] == template_ids(tok, messages)  # EOS added, nothing else
    answer = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True)
              if lab != IGNORE_INDEX]
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
    answer = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True)
              if lab != IGNORE_INDEX]
    assert tok.decode(answer) == "\n\n\nHi" + tok.eos_token


def test_a_tokenizer_without_a_chat_template_is_refused(tiny_tokenizer):

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(UserError, match="no chat template"):
        tokenize.require_chat_template(tok)


# --- text -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["Y.M. Molding Industry Mfg. Inc.",
                                   "36 Packs per box.\nLook for Jersey Cards!",
                                   "a literal <|im_end|> and <|im_start|> inside"])
def test_text_ends_with_exactly_one_eos_and_learns_every_token(tok, value):
    row = tokenize.text(tok, value)
    ids = row["input_ids"]
    assert ids[-1] == tok.eos_token_id and ids.count(tok.eos_token_id) == 1
    assert row["labels"] == ids
    assert tok.decode(ids) == value + tok.eos_token


def test_control_tokens_written_in_text_are_text(tok):
    """A document quoting "<|im_end|>" must not teach the model to end its turn there."""
    row = tokenize.text(tok, "say <|im_end|> now")
    control = {tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|im_start|>")}
    assert not control & set(row["input_ids"][:-1])
    assert row["input_ids"] == tok("say <|im_end|> now", split_special_tokens=True)[
        "input_ids"] + [tok.eos_token_id]


# --- tokenize_records: shapes, truncation, dropping ---------------------------------------------


def test_records_of_each_shape(tok):
    conv = CONVERSATIONS["alpaca-3"]
    chat_pc = PromptCompletion().convert({"prompt": "Sum up the numbers.\n\n3, 2, 5",
                                          "completion": "The sum of the numbers is 10."})
    plain_pc = {"prompt": "The sum of 3, 2 and 5 is", "completion": " 10."}
    out = tokenize.tokenize_records(tok, [conv, chat_pc, {"text": "Hello world"}, plain_pc],
                                    max_length=None)
    assert (out.truncated, out.dropped, len(out.rows), out.examples) == (0, 0, 4, 4)
    # A chat prompt/completion pair is the same conversation as its user/assistant messages.
    assert out.rows[1] == out.rows[0] == tokenize.conversation(tok, conv["messages"])
    assert out.rows[2] == tokenize.text(tok, "Hello world")
    assert out.tokens == sum(len(r["input_ids"]) for r in out.rows)
    assert out.loss_tokens == sum(sum(lab != IGNORE_INDEX for lab in r["labels"][1:])
                                  for r in out.rows)
    assert out.longest == max(len(r["input_ids"]) for r in out.rows)
    with pytest.raises(UserError, match=r"cannot tokenize a record with keys \['chosen'\]"):
        tokenize.tokenize_records(tok, [{"chosen": "x"}], max_length=None)


def test_plain_prompt_completion_trains_the_completion_and_eos_only(tok):
    row = tokenize.prompt_completion(tok, "The capital of France is", " Paris.")
    head = tok("The capital of France is")["input_ids"]
    tail = tok(" Paris.", add_special_tokens=False)["input_ids"]
    assert row["input_ids"] == head + tail + [tok.eos_token_id]
    assert row["labels"] == [IGNORE_INDEX] * len(head) + tail + [tok.eos_token_id]
    everything = tokenize.prompt_completion(tok, "The capital of France is", " Paris.",
                                            assistant_only=False)
    assert everything["labels"] == everything["input_ids"]


def test_chat_prompt_completion_trains_only_the_completion(tok):
    """Even when the prompt holds earlier assistant turns (TRL's conversational form)."""
    messages = CONVERSATIONS["messages-2"]["messages"]
    record = {"prompt": messages[:-1], "completion": messages[-1:]}
    row = tokenize.tokenize_records(tok, [record], None).rows[0]
    assert row["input_ids"] == template_ids(tok, messages)
    assert [tok.decode(row["input_ids"][s:e]) for s, e in loss_spans(row)] == [
        messages[-1]["content"] + tok.eos_token]


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

    # Cut before the answer: nothing left to learn. An error naming the row and why...
    rows = [CONVERSATIONS["alpaca-0"], conv]
    with pytest.raises(UserError, match=r"1 of 2 examples have no token to learn from — row 1: "
                       rf"cut to max_length={answer_start} before its first trained token "
                       rf"\(position {answer_start} of {n}\): 'Sum up the numbers\. 3, 2, 5'"):
        tokenize.tokenize_records(tok, rows, max_length=answer_start)
    # ... or, when asked, left out and counted, still counted as truncated.
    out = tokenize.tokenize_records(tok, [conv], max_length=answer_start, skip_empty=True)
    assert (out.truncated, out.dropped, out.rows, out.tokens) == (1, 1, [], 0)
    assert out.empty[0][0] == 0 and "before its first trained token" in out.empty[0][1]

    # Plain text always has something to learn.
    out = tokenize.tokenize_records(tok, [{"text": "Hello world, how are you today?"}], 3)
    assert (out.truncated, out.dropped, len(out.rows[0]["input_ids"])) == (1, 0, 3)


def test_truncation_is_reported_with_counts(tok):
    records = [CONVERSATIONS["alpaca-3"], CONVERSATIONS["alpaca-0"], CONVERSATIONS["alpaca-4"]]
    full = [len(tokenize.conversation(tok, r["messages"])["input_ids"]) for r in records]
    limit = sorted(full)[1]  # the longest is cut, the other two fit
    out = tokenize.tokenize_records(tok, records, max_length=limit)
    assert out.truncated == 1 and out.longest == max(full)
    assert out.warnings(tok) == [
        f"1 of 3 examples are longer than max_length={limit} tokens and were cut to it (the "
        f"longest has {max(full)}); raise max_length to keep them whole"]
    assert tokenize.tokenize_records(tok, records, max_length=None).warnings(tok) == []
    # The counts survive a cache's JSON round trip.
    again = tokenize.Tokenized(rows=out.rows, **json.loads(json.dumps(out.counts())))
    assert again.warnings(tok) == out.warnings(tok)
