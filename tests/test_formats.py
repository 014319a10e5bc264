"""The built-in formats turn real rows into the chat/text shapes, and refuse bad rows clearly."""

import json
from pathlib import Path

import pytest

from ftp import Shape, UserError
from ftp.config import load_pipeline
from ftp.data import load_records, prepare
from ftp.plugins import load_plugins
from ftp.testing import write_pipeline

DATA = Path(__file__).parent / "data"


def rows(name: str) -> list[dict]:
    path = DATA / name
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


@pytest.fixture
def fmt(plugins):
    """A format as a pipeline would build it: found by name in the registry, options validated."""

    def build(name: str, **options):
        entry = plugins.registry.get("format", name)
        return entry.cls(entry.cls.Config(**options))

    return build


def test_builtin_formats_are_registered_with_their_shapes(plugins):
    shapes = {n: plugins.registry.get("format", n).cls.produces
              for n in ("alpaca", "messages", "sharegpt", "prompt_completion", "text")}
    assert shapes == {"alpaca": Shape.CONVERSATIONAL, "messages": Shape.CONVERSATIONAL,
                      "sharegpt": Shape.CONVERSATIONAL,
                      "prompt_completion": Shape.PROMPT_COMPLETION,
                      "text": Shape.LANGUAGE_MODELING}


# --- alpaca -------------------------------------------------------------------------------


def test_alpaca_without_input_is_one_user_and_one_assistant_turn(fmt):
    row = rows("alpaca.json")[0]  # identity.json: "hi", empty input
    assert fmt("alpaca").convert(row) == {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": row["output"]},
    ]}


def test_alpaca_input_follows_the_instruction_after_a_blank_line(fmt):
    row = rows("alpaca.json")[3]  # alpaca_en_demo: "Sum up the numbers." / "3, 2, 5"
    assert fmt("alpaca").convert(row)["messages"] == [
        {"role": "user", "content": "Sum up the numbers.\n\n3, 2, 5"},
        {"role": "assistant", "content": "The sum of the numbers is 10."},
    ]


def test_alpaca_whitespace_input_adds_nothing(fmt):
    row = {**rows("alpaca.json")[4], "input": "  \n"}
    assert fmt("alpaca").convert(row)["messages"][0] == {
        "role": "user", "content": "Classify this as either an object or an action."}


def test_alpaca_missing_input_column_is_fine(fmt):
    row = {k: v for k, v in rows("alpaca.json")[2].items() if k != "input"}
    assert fmt("alpaca").convert(row)["messages"][0]["content"] == "Who are you?"


def test_alpaca_system_prompt_comes_first_on_every_row(fmt):
    f = fmt("alpaca", system_prompt="You are Nova.")
    for row in rows("alpaca.json"):
        messages = f.convert(row)["messages"]
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        assert messages[0]["content"] == "You are Nova."


def test_alpaca_system_column_beats_the_fixed_prompt(fmt):
    f = fmt("alpaca", system="sys", system_prompt="fallback")
    row = rows("alpaca.json")[3]
    assert f.convert({**row, "sys": "Be terse."})["messages"][0] == {
        "role": "system", "content": "Be terse."}
    # A row without the column (or with it empty) falls back to system_prompt.
    assert f.convert(row)["messages"][0]["content"] == "fallback"
    assert f.convert({**row, "sys": ""})["messages"][0]["content"] == "fallback"


def test_alpaca_column_mapping(fmt):
    f = fmt("alpaca", instruction="question", input="context", output="answer")
    row = {"question": "Sum up the numbers.", "context": "3, 2, 5",
           "answer": "The sum of the numbers is 10."}
    assert f.convert(row)["messages"] == [
        {"role": "user", "content": "Sum up the numbers.\n\n3, 2, 5"},
        {"role": "assistant", "content": "The sum of the numbers is 10."},
    ]


def test_alpaca_missing_output_names_the_field_and_the_row_keys(fmt):
    row = {k: v for k, v in rows("alpaca.json")[3].items() if k != "output"}
    with pytest.raises(ValueError, match=r"missing field 'output'.*\['input', 'instruction'\]"):
        fmt("alpaca").convert(row)


def test_alpaca_empty_output_and_empty_instruction_are_refused(fmt):
    row = rows("alpaca.json")[3]
    with pytest.raises(ValueError, match="empty output in 'output'"):
        fmt("alpaca").convert({**row, "output": "  "})
    with pytest.raises(ValueError, match="empty instruction"):
        fmt("alpaca").convert({**row, "instruction": "", "input": ""})


def test_alpaca_non_text_output_is_refused(fmt):
    with pytest.raises(ValueError, match="'output' should be text, got int"):
        fmt("alpaca").convert({"instruction": "2+2?", "output": 4})


def test_alpaca_history_comes_before_the_turn(fmt):
    row = {**rows("alpaca.json")[3], "history": [["Hi", "Hello!"], ["Add 1 and 1.", "2."]]}
    assert [(m["role"], m["content"]) for m in fmt("alpaca").convert(row)["messages"]] == [
        ("user", "Hi"), ("assistant", "Hello!"), ("user", "Add 1 and 1."), ("assistant", "2."),
        ("user", "Sum up the numbers.\n\n3, 2, 5"),
        ("assistant", "The sum of the numbers is 10.")]
    f = fmt("alpaca", history="past")
    assert len(f.convert({**row, "past": [["a", "b"]]})["messages"]) == 4
    assert len(f.convert(row)["messages"]) == 2  # the other column is not read


def test_alpaca_bad_history_names_the_field(fmt):
    row = rows("alpaca.json")[3]
    with pytest.raises(ValueError, match="field 'history' should be a list of"):
        fmt("alpaca").convert({**row, "history": "Hi"})
    with pytest.raises(ValueError, match="field 'history' item 1 should be a pair"):
        fmt("alpaca").convert({**row, "history": [["a", "b"], ["c", ""]]})


def test_alpaca_rejects_unknown_options(plugins):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="instructoin"):
        plugins.registry.get("format", "alpaca").cls.Config(instructoin="q")


# --- messages -------------------------------------------------------------------------------


def test_messages_copies_real_conversations(fmt):
    f = fmt("messages")
    for row in rows("messages.json"):  # kto_en_demo rows also carry a `label` key
        assert f.convert(row) == {"messages": [
            {"role": m["role"], "content": m["content"]} for m in row["messages"]]}


def test_messages_multi_turn_keeps_every_turn_in_order(fmt):
    row = rows("messages.json")[2]
    roles = [m["role"] for m in fmt("messages").convert(row)["messages"]]
    assert roles == ["user", "assistant"] * 3


def test_messages_system_prompt_only_when_the_row_has_none(fmt):
    f = fmt("messages", system_prompt="You are Nova.")
    row = rows("messages.json")[0]
    assert f.convert(row)["messages"][0] == {"role": "system", "content": "You are Nova."}
    own = {"messages": [{"role": "system", "content": "Be brief."}, *row["messages"]]}
    messages = f.convert(own)["messages"]
    assert [m["content"] for m in messages if m["role"] == "system"] == ["Be brief."]


def test_messages_custom_keys(fmt):
    f = fmt("messages", messages="conversation", role_key="speaker", content_key="text")
    row = {"conversation": [{"speaker": "user", "text": "hi"},
                            {"speaker": "assistant", "text": "Hello!"}]}
    assert f.convert(row)["messages"] == [{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "Hello!"}]


def test_messages_unknown_role_is_named(fmt):
    row = {"messages": [{"role": "narrator", "content": "Once"},
                        {"role": "assistant", "content": "upon"}]}
    with pytest.raises(ValueError, match=r"message 0 has role 'narrator'; expected one of"):
        fmt("messages").convert(row)


def test_messages_must_end_with_an_assistant_turn(fmt):
    row = rows("messages.json")[0]
    with pytest.raises(ValueError, match="does not end with an assistant message"):
        fmt("messages").convert({"messages": row["messages"][:1]})


def test_messages_openai_tool_calls_and_tool_results(fmt):
    row = {"messages": [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in "},
                                     {"type": "text", "text": "Paris?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        {"role": "assistant", "content": "18C in Paris."}],
        "tools": json.dumps([{"type": "function", "function": {"name": "weather"}}])}
    assert fmt("messages").convert(row) == {
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "id": "c1",
                 "function": {"name": "weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "18C", "tool_call_id": "c1"},
            {"role": "assistant", "content": "18C in Paris."}],
        "tools": [{"type": "function", "function": {"name": "weather"}}],
    }


def test_messages_role_mapping(fmt):
    f = fmt("messages", roles={"human": "user", "bot": "assistant"})
    row = {"messages": [{"role": "human", "content": "hi"}, {"role": "bot", "content": "yo"}]}
    assert [m["role"] for m in f.convert(row)["messages"]] == ["user", "assistant"]


def test_messages_empty_content_and_bad_calls_name_the_message(fmt):
    f = fmt("messages")
    with pytest.raises(ValueError, match=r"message 0 \(user\): empty 'content'"):
        f.convert({"messages": [{"role": "user", "content": " "},
                                {"role": "assistant", "content": "yo"}]})
    # Indices are the row's own, even when a system prompt is put first.
    with pytest.raises(ValueError, match=r"message 1 \(assistant\): empty 'content'"):
        fmt("messages", system_prompt="Be brief.").convert({"messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": ""},
            {"role": "user", "content": "hi?"}, {"role": "assistant", "content": "yo"}]})
    with pytest.raises(ValueError, match=r"message 1 call 0: the arguments of 'f' are not "
                                         "valid JSON"):
        f.convert({"messages": [{"role": "user", "content": "hi"}, {
            "role": "assistant", "content": None,
            "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}]}]})
    with pytest.raises(ValueError, match="message 0 is an assistant message"):
        f.convert({"messages": [{"role": "assistant", "content": "hi"}]})


def test_messages_other_bad_rows(fmt):
    f = fmt("messages")
    with pytest.raises(ValueError, match="should be a list of messages"):
        f.convert({"messages": "hi"})
    with pytest.raises(ValueError, match="empty conversation"):
        f.convert({"messages": []})
    with pytest.raises(ValueError, match="message 0 needs 'role' and 'content'"):
        f.convert({"messages": [{"role": "user"}]})
    with pytest.raises(ValueError, match="message 1 'content' should be text, got NoneType"):
        f.convert({"messages": [{"role": "user", "content": "hi"},
                                {"role": "assistant", "content": None}]})
    with pytest.raises(ValueError, match="system message may only come first"):
        f.convert({"messages": [{"role": "user", "content": "hi"},
                                {"role": "system", "content": "x"},
                                {"role": "assistant", "content": "yo"}]})


# --- sharegpt --------------------------------------------------------------------------------


def _tools(row: dict) -> list[dict]:
    """The row's tools column as the formats give it: OpenAI function form."""
    return [{"type": "function", "function": t} for t in json.loads(row["tools"])]


def test_sharegpt_function_call_is_an_assistant_tool_call_and_observation_a_tool_turn(fmt):
    row = rows("sharegpt_toolcall.json")[0]  # human, function_call, observation, gpt
    turns = row["conversations"]
    call = json.loads(turns[1]["value"])
    assert fmt("sharegpt").convert(row) == {
        "messages": [
            {"role": "user", "content": turns[0]["value"]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": call["name"],
                                                  "arguments": call["arguments"]}}]},
            {"role": "tool", "content": turns[2]["value"]},  # the observation
            {"role": "assistant", "content": turns[3]["value"]},
        ],
        "tools": _tools(row),
    }


def test_sharegpt_multi_turn_tool_call_after_chat(fmt):
    row = rows("sharegpt_toolcall.json")[2]  # human, gpt, human, function_call, observation, gpt
    roles = [m["role"] for m in fmt("sharegpt").convert(row)["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "tool", "assistant"]


def test_sharegpt_system_column_and_tools(fmt):
    row = {**rows("sharegpt_toolcall.json")[1], "system": "You are a helpful assistant."}
    out = fmt("sharegpt").convert(row)
    assert out["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert out["tools"] == _tools(row)


def test_sharegpt_system_turn_wins_over_the_column(fmt):
    row = rows("sharegpt_toolcall.json")[1]
    row = {**row, "system": "ignored", "conversations": [
        {"from": "system", "value": "Be helpful."}, *row["conversations"]]}
    messages = fmt("sharegpt").convert(row)["messages"]
    assert [m["content"] for m in messages if m["role"] == "system"] == ["Be helpful."]


def test_sharegpt_parallel_calls_and_tools_as_a_list(fmt):
    calls = [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": "{\"y\": 2}"}]
    row = {"conversations": [{"from": "human", "value": "do both"},
                             {"from": "function_call", "value": json.dumps(calls)}],
           "tools": [{"name": "a"}, {"type": "function", "function": {"name": "b"}}]}
    out = fmt("sharegpt").convert(row)
    assert out["messages"][1]["tool_calls"] == [
        {"type": "function", "function": {"name": "a", "arguments": {"x": 1}}},
        {"type": "function", "function": {"name": "b", "arguments": {"y": 2}}}]
    assert [t["function"]["name"] for t in out["tools"]] == ["a", "b"]


def test_sharegpt_role_mapping(fmt):
    f = fmt("sharegpt", roles={"customer": "user", "agent": "assistant", "api": "observation",
                               "call": "function_call"})
    row = {"conversations": [
        {"from": "customer", "value": "weather?"},
        {"from": "call", "value": '{"name": "w", "arguments": {}}'},
        {"from": "api", "value": "sunny"},
        {"from": "agent", "value": "Sunny."}]}
    assert [m["role"] for m in f.convert(row)["messages"]] == ["user", "assistant", "tool",
                                                               "assistant"]


def test_sharegpt_bad_tool_data_names_the_field(fmt):
    row = rows("sharegpt_toolcall.json")[0]
    with pytest.raises(ValueError, match=r"field 'tools' is not valid JSON"):
        fmt("sharegpt").convert({**row, "tools": "[{"})
    with pytest.raises(ValueError, match=r"field 'tools' item 0: a tool needs a \"name\""):
        fmt("sharegpt").convert({**row, "tools": [{"description": "nameless"}]})
    bad = [dict(t) for t in row["conversations"]]
    bad[1]["value"] = "search for it"
    with pytest.raises(ValueError, match=r"turn 1 \(function_call\): not valid JSON"):
        fmt("sharegpt").convert({**row, "conversations": bad})
    bad[1]["value"] = '{"arguments": {}}'
    with pytest.raises(ValueError, match=r"turn 1 \(function_call\): a tool call needs a"):
        fmt("sharegpt").convert({**row, "conversations": bad})


def test_sharegpt_without_tools_has_no_tools_key(fmt):
    row = rows("sharegpt_toolcall.json")[1]
    out = fmt("sharegpt", tools=None).convert(row)
    assert "tools" not in out and out["messages"][0]["role"] == "user"
    row = {k: v for k, v in row.items() if k != "tools"}
    assert "tools" not in fmt("sharegpt").convert(row)
    assert "tools" not in fmt("sharegpt").convert({**row, "tools": ""})


def test_sharegpt_accepts_openai_role_names_and_custom_keys(fmt):
    f = fmt("sharegpt", conversations="turns", role_key="role", content_key="content")
    row = {"turns": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    assert f.convert(row)["messages"] == [{"role": "user", "content": "hi"},
                                          {"role": "assistant", "content": "yo"}]


def test_sharegpt_unknown_role_lists_the_known_ones(fmt):
    row = {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "yo"}]}
    with pytest.raises(ValueError, match=r"turn 1 has unknown role 'bot'; expected one of "
                                         r"\['assistant', 'function_call', 'gpt', 'human'"):
        fmt("sharegpt").convert(row)


def test_sharegpt_must_end_with_an_assistant_turn(fmt):
    row = rows("sharegpt_toolcall.json")[0]
    cut = {**row, "conversations": row["conversations"][:3]}  # ends with the observation
    with pytest.raises(ValueError, match="does not end with an assistant message"):
        fmt("sharegpt").convert(cut)


def test_sharegpt_bad_turns(fmt):
    f = fmt("sharegpt")
    with pytest.raises(ValueError, match=r"turn 1 \(gpt\): empty 'value'"):
        f.convert({"system": "Be brief.", "conversations": [
            {"from": "human", "value": "hi"}, {"from": "gpt", "value": " "}]})
    with pytest.raises(ValueError, match="'conversations' should be a list of turns"):
        f.convert({"conversation": []})
    with pytest.raises(ValueError, match="turn 0 needs 'from' and 'value'"):
        f.convert({"conversations": [{"from": "human", "text": "hi"}]})
    with pytest.raises(ValueError, match="turn 1: 'value' should be text, got NoneType"):
        f.convert({"conversations": [{"from": "human", "value": "hi"},
                                     {"from": "gpt", "value": None}]})


# --- prompt_completion -------------------------------------------------------------------------


def test_prompt_completion_as_chat_turns(fmt):
    row = {"prompt": "2+2?", "completion": "4", "sys": "Be terse."}
    assert fmt("prompt_completion").convert(row) == {
        "prompt": [{"role": "user", "content": "2+2?"}],
        "completion": [{"role": "assistant", "content": "4"}]}
    out = fmt("prompt_completion", system="sys").convert(row)
    assert out["prompt"][0] == {"role": "system", "content": "Be terse."}
    out = fmt("prompt_completion", system_prompt="Hi.").convert(row)
    assert out["prompt"][0] == {"role": "system", "content": "Hi."}


def test_prompt_completion_plain_text_and_column_mapping(fmt):
    f = fmt("prompt_completion", prompt="q", completion="a", chat=False)
    assert f.convert({"q": "The capital of France is", "a": " Paris."}) == {
        "prompt": "The capital of France is", "completion": " Paris."}


def test_prompt_completion_bad_rows_and_options(fmt, plugins):
    from pydantic import ValidationError

    f = fmt("prompt_completion")
    with pytest.raises(ValueError, match="missing field 'completion'"):
        f.convert({"prompt": "x"})
    with pytest.raises(ValueError, match="empty completion in 'completion'"):
        f.convert({"prompt": "x", "completion": "\n"})
    with pytest.raises(ValueError, match="empty prompt in 'prompt'"):
        f.convert({"prompt": "", "completion": "y"})
    with pytest.raises(ValueError, match="'prompt' should be text, got list"):
        f.convert({"prompt": ["x"], "completion": "y"})
    with pytest.raises(ValidationError, match="system prompts need chat = true"):
        plugins.registry.get("format", "prompt_completion").cls.Config(chat=False,
                                                                       system_prompt="x")


# --- text ------------------------------------------------------------------------------------


def test_text_keeps_the_column(fmt):
    for row in rows("text.jsonl"):
        assert fmt("text").convert(row) == {"text": row["text"]}
    assert fmt("text", text="body").convert({"body": "Hello."}) == {"text": "Hello."}


def test_text_bad_rows(fmt):
    with pytest.raises(ValueError, match="missing field 'text'"):
        fmt("text").convert({"body": "x"})
    with pytest.raises(ValueError, match="empty text in 'text'"):
        fmt("text").convert({"text": " \n"})


# --- through a pipeline -------------------------------------------------------------------


def test_a_bad_row_in_a_pipeline_names_dataset_row_and_format(tmp_path, plugins):
    good = rows("alpaca.json")[3]
    (tmp_path / "d.json").write_text(json.dumps([good, {"instruction": "hi"}]))
    path = write_pipeline(tmp_path / "p.toml", """
        [pipeline]
        name = "t"
        [model]
        path = "unused"
        [data.d]
        loader = "json"
        path = "d.json"
        format = "alpaca"
        shuffle = false
        [[stages]]
        method = "sft"
        data = "d"
    """)
    p = load_pipeline(path, plugins)
    ds = p.datasets["d"]
    with pytest.raises(UserError, match=r"missing field 'output'") as exc:
        prepare(ds, load_records(ds, p.base_dir, p.seed), p.base_dir, p.seed)
    assert "d.json:1 (item 1)" in str(exc.value) and "'alpaca'" in str(exc.value)


# --- preference formats: role mapping ----------------------------------------------------------


def test_preference_formats_map_role_names(fmt):
    pair = fmt("sharegpt_preference", roles={"customer": "user", "agent": "assistant"}).convert(
        {"conversations": [{"from": "customer", "value": "2+2?"}],
         "chosen": {"from": "agent", "value": "4"}, "rejected": {"from": "agent", "value": "5"}})
    assert pair["prompt"] == [{"role": "user", "content": "2+2?"}]
    assert pair["chosen"] == [{"role": "assistant", "content": "4"}]
    columns = fmt("preference", roles={"q": "user", "a": "assistant"}).convert(
        {"prompt": [{"role": "q", "content": "2+2?"}], "chosen": [{"role": "a", "content": "4"}],
         "rejected": "5"})
    assert columns["prompt"] == [{"role": "user", "content": "2+2?"}]
    kto = fmt("kto", roles={"human": "user", "bot": "assistant"}).convert(
        {"messages": [{"role": "human", "content": "2+2?"}, {"role": "bot", "content": "4"}],
         "label": True})
    assert kto == {"prompt": [{"role": "user", "content": "2+2?"}],
                   "completion": [{"role": "assistant", "content": "4"}], "label": True}
    with pytest.raises(ValueError, match=r"message 0 has unknown role 'human'"):
        fmt("kto").convert({"messages": [{"role": "human", "content": "2+2?"},
                                         {"role": "assistant", "content": "4"}], "label": True})


# --- labelled text on MiniLM's tokenizer ---------------------------------------------------------

# sst2_train.csv rows 1-3 of the shared datasets (GLUE SST-2), with the CSV's text labels.
SST2 = [
    {"text": "it will guarantee to have you leaving the theater with a smile on your face .",
     "label": "positive"},
    {"text": "everything 's serious , poetic , earnest and -- sadly -- dull .",
     "label": "negative"},
    {"text": "  i 'd recommend waiting for dvd and just skipping straight to her scenes .\n",
     "label": " negative"},
]


@pytest.mark.slow
def test_labelled_text_on_minilm_is_one_cls_the_words_and_one_sep(fmt):
    from ftp_builtin.models import HFProvider

    tok = HFProvider(HFProvider.Config(path="all-minilm-l6-v2")).load_tokenizer()
    f = fmt("classification")
    for row in SST2:
        record = f.convert(row)
        assert record["label"] == row["label"].strip()
        ids = tok(record["text"])["input_ids"]  # as the classify method tokenizes
        words = tok(row["text"].strip(), add_special_tokens=False)["input_ids"]
        assert ids == [tok.cls_token_id, *words, tok.sep_token_id]
        assert ids.count(tok.cls_token_id) == ids.count(tok.sep_token_id) == 1
        pieces = tok.convert_ids_to_tokens(ids[1:-1])  # word pieces spell the text out
        assert "".join(p.removeprefix("##") for p in pieces) == "".join(row["text"].split())
