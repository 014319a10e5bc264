"""Tool calls, token by token: glaive rows on SmolLM2 (no tool support), a tool-aware template.

SmolLM2's template knows nothing of tools, so ftp writes the tool definitions into the system
message and each call as a JSON line in the assistant turn; a template that handles tools gets
them as they are. Either way the calls are trained, observations and definitions are not.
"""

import json
from pathlib import Path

import pytest

from ftp import IGNORE_INDEX, UserError
from ftp_builtin import tokenize
from ftp_builtin.formats.chat import ShareGPT

DATA = Path(__file__).parent / "data"
GLAIVE = json.loads((DATA / "sharegpt_toolcall.json").read_text(encoding="utf-8"))

# Qwen2.5-style: tools listed in the system turn, calls inside <tool_call> tags, results as
# user-side <tool_response> turns.
TOOL_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n"
    "{%- if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{%- endif %}"
    "# Tools\n{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}<|im_end|>\n"
    "{%- elif messages[0]['role'] == 'system' %}"
    "<|im_start|>system\n{{ messages[0]['content'] }}<|im_end|>\n{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m['role'] == 'user' or (m['role'] == 'assistant' and not m.tool_calls) %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{%- elif m['role'] == 'assistant' %}<|im_start|>assistant\n{{ m['content'] }}"
    "{%- for call in m.tool_calls %}<tool_call>{{ call.function | tojson }}</tool_call>"
    "{%- endfor %}<|im_end|>\n"
    "{%- elif m['role'] == 'tool' %}"
    "<|im_start|>user\n<tool_response>{{ m['content'] }}</tool_response><|im_end|>\n"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def trained_and_not(tok, row) -> tuple[list[str], str]:
    """The decoded runs of trained tokens, and the decoded untrained tokens."""
    runs, current, rest = [], [], []
    for t, lab in zip(row["input_ids"], row["labels"], strict=True):
        if lab != IGNORE_INDEX:
            current.append(t)
        else:
            if current:
                runs.append(tok.decode(current))
                current = []
            rest.append(t)
    if current:
        runs.append(tok.decode(current))
    return runs, tok.decode(rest)


@pytest.mark.slow
def test_glaive_row_on_smollm2_calls_trained_as_json_observations_not(smollm2_tokenizer):
    tok = smollm2_tokenizer
    assert not tokenize.supports_tools(tok)
    raw = GLAIVE[2]  # human, gpt, human, function_call, observation, gpt
    record = ShareGPT().convert(raw)
    out = tokenize.tokenize_records(tok, [record], max_length=None)
    row = out.rows[0]
    messages, tools = tokenize.for_template(tok, record["messages"], record["tools"])
    assert tools is None
    ids = tok.apply_chat_template(messages, tokenize=True)["input_ids"]
    assert row["input_ids"] == list(ids)  # exactly the template's rendering
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id
    runs, untrained = trained_and_not(tok, row)
    turns = raw["conversations"]
    # Every assistant turn, the function call included (as the data wrote it), ends with EOS.
    assert runs == [t["value"] + tok.eos_token for t in turns
                    if t["from"] in ("gpt", "function_call")]
    observation = next(t["value"] for t in turns if t["from"] == "observation")
    assert f"<|im_start|>tool\n{observation}<|im_end|>" in untrained
    # The definitions open the system message (replacing SmolLM2's default one).
    assert untrained.startswith(f"<|im_start|>system\n{tokenize.TOOLS_PREAMBLE}\n")
    for tool in json.loads(raw["tools"]):
        assert json.dumps(tool) in untrained
    assert "SmolLM" not in untrained
    assert out.fixes == {}


@pytest.mark.slow
def test_a_template_with_tool_support_gets_calls_and_tools_as_they_are(smollm2_tokenizer):
    import copy

    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = TOOL_TEMPLATE
    assert tokenize.supports_tools(tok)
    for raw in GLAIVE:
        record = ShareGPT().convert({**raw, "system": "Be brief."})
        row = tokenize.conversation(tok, record["messages"], tools=record["tools"])
        expected = tok.apply_chat_template(record["messages"], tools=record["tools"],
                                           tokenize=True)["input_ids"]
        assert row["input_ids"] == list(expected)
        runs, untrained = trained_and_not(tok, row)
        wanted = []
        for m in record["messages"]:
            if m["role"] == "assistant":
                calls = "".join(f"<tool_call>{json.dumps(c['function'])}</tool_call>"
                                for c in m.get("tool_calls", []))
                wanted.append(m["content"] + calls + tok.eos_token)
        assert runs == wanted
        assert "<tool_response>" in untrained and "# Tools" in untrained
        assert tokenize.TOOLS_PREAMBLE not in tok.decode(row["input_ids"])


@pytest.mark.slow
def test_a_template_that_refuses_the_tool_role_is_a_clear_error(smollm2_tokenizer):
    import copy

    tok = copy.deepcopy(smollm2_tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
        "{{ raise_exception('Only user and assistant roles are supported') }}{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    record = ShareGPT().convert(GLAIVE[0])
    with pytest.raises(UserError, match=r"the chat template cannot render this conversation: "
                                        r"Only user and assistant roles are supported"):
        tokenize.tokenize_records(tok, [record], None)
