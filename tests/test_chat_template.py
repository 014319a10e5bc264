"""The chat template: chosen by ``[model] chat_template``, used for training, evaluation and the
saved model; loss masks without generation markers; BOS and EOS checks."""

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftp import IGNORE_INDEX, UserError
from ftp.cli import cli
from ftp.testing import CHATML_TEMPLATE, make_tiny_tokenizer, write_pipeline
from ftp_builtin import templates, tokenize
from ftp_builtin.formats.chat import Alpaca, Messages
from ftp_builtin.models import HFProvider

DATA = Path(__file__).parent / "data"

# ChatML with the markers transformers needs for return_assistant_tokens_mask: an oracle for
# the masks ftp computes without them.
MARKED_CHATML = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A template that closes no turn with EOS (plain "role: text" lines).
NO_EOS = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")


def _rows(name: str) -> list[dict]:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def conversations() -> list[list[dict]]:
    alpaca = [Alpaca().convert(r)["messages"] for r in _rows("alpaca.json")]
    messages = [Messages().convert(r)["messages"] for r in _rows("messages.json")]
    return alpaca + messages


@pytest.fixture
def tiny():
    return make_tiny_tokenizer()


def with_bos_post_processor(tok):
    """Make the tokenizer put a BOS before plain text, as Llama's does."""
    from tokenizers import processors

    bos = "<|endoftext|>"
    bos_id = tok.convert_tokens_to_ids(bos)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    tok.bos_token = bos
    return bos_id


# --- masks without generation markers --------------------------------------------------------


@pytest.mark.slow
def test_masks_equal_transformers_generation_masks_on_smollm2(smollm2_tokenizer):
    tok = copy.deepcopy(smollm2_tokenizer)
    assert "{% generation %}" not in tok.chat_template  # SmolLM2's own has no markers
    tok.chat_template = MARKED_CHATML
    for messages in conversations():
        out = tok.apply_chat_template(messages, tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
        expected = [t if m else IGNORE_INDEX
                    for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True)]
        row = tokenize.conversation(tok, messages)
        assert row["input_ids"] == list(out["input_ids"])
        assert row["labels"] == expected


def test_every_turn_of_a_template_without_eos_gets_a_trained_eos(tiny):
    tiny.chat_template = NO_EOS
    messages = Messages().convert(_rows("messages.json")[2])["messages"]  # 3 assistant turns
    out = tokenize.tokenize_records(tiny, [{"messages": messages}], None)
    row = out.rows[0]
    eos = tiny.eos_token_id
    assert row["input_ids"].count(eos) == 3 and out.fixes == {"added_eos": 3}
    # Take the added EOS tokens out and what is left is exactly the template's rendering.
    assert [t for t in row["input_ids"] if t != eos] == tiny.apply_chat_template(
        messages, tokenize=True)["input_ids"]
    runs, current = [], []
    for t, lab in zip(row["input_ids"], row["labels"], strict=True):
        if lab != IGNORE_INDEX:
            current.append(t)
        elif current:
            runs.append(current)
            current = []
    runs.append(current)
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    # (The space after "assistant:" belongs to the answer where it merges with its first word.)
    assert [tiny.decode(r).lstrip(" ") for r in runs] == [a + "\n" + tiny.eos_token
                                                          for a in answers]
    assert "does not end assistant turns with <|im_end|>; it was added after 3 turns" in \
        out.warnings(tiny)[0]


# --- BOS -------------------------------------------------------------------------------------


def test_a_template_that_doubles_bos_is_refused(tiny):
    """Llama-2 style: BOS at the start and again before each user turn."""
    with_bos_post_processor(tiny)
    tiny.chat_template = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}" \
        "{{ bos_token }}{% endif %}{{ m['role'] + ': ' + m['content'] + eos_token }}{% endfor %}" \
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    messages = Alpaca().convert(_rows("alpaca.json")[3])["messages"]
    with pytest.raises(UserError, match=r"renders <\|endoftext\|> twice at the start"):
        tokenize.tokenize_records(tiny, [{"messages": messages}], None)


def test_a_template_without_the_bos_the_tokenizer_adds_is_reported(tiny):
    bos_id = with_bos_post_processor(tiny)
    tiny.chat_template = CHATML_TEMPLATE  # renders no BOS
    records = [Alpaca().convert(r) for r in _rows("alpaca.json")[:2]]
    out = tokenize.tokenize_records(tiny, records, None)
    assert out.fixes == {"no_bos": 2}
    assert out.rows[0]["input_ids"][0] != bos_id  # reported, not changed: inference matches
    assert "2 conversations do not start with <|endoftext|>" in out.warnings(tiny)[0]
    tiny.chat_template = "{{ bos_token }}" + CHATML_TEMPLATE
    assert tokenize.tokenize_records(tiny, records, None).fixes == {}


# --- choosing the template -------------------------------------------------------------------


def provider_tokenizer(folder: Path, template: str | None):
    return HFProvider(HFProvider.Config(path=str(folder), chat_template=template)
                      ).load_tokenizer()


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tok")
    tok = make_tiny_tokenizer()
    tok.chat_template = NO_EOS  # the folder's own template, to be replaced
    tok.save_pretrained(str(folder))
    (folder / "config.json").write_text("{}")  # what the provider checks for a model folder
    return folder


def test_the_tokenizers_own_template_by_default(tokenizer_folder):
    assert provider_tokenizer(tokenizer_folder, None).chat_template == NO_EOS


def test_a_named_inline_or_file_template(tokenizer_folder, tmp_path):
    assert provider_tokenizer(tokenizer_folder, "chatml").chat_template == templates.CHATML
    assert provider_tokenizer(tokenizer_folder, MARKED_CHATML).chat_template == MARKED_CHATML
    file = tmp_path / "t.jinja"
    file.write_text(MARKED_CHATML, encoding="utf-8")
    assert provider_tokenizer(tokenizer_folder, str(file)).chat_template == MARKED_CHATML


def test_bad_templates_are_refused_clearly(tokenizer_folder):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"'chatlm' is not a known template \(did you "
                                              r"mean 'chatml'\?\), inline Jinja, or an existing"):
        provider_tokenizer(tokenizer_folder, "chatlm")
    with pytest.raises(ValidationError, match=r"'templates/missing.jinja' is not a known"):
        provider_tokenizer(tokenizer_folder, "templates/missing.jinja")
    with pytest.raises(UserError, match="cannot render a conversation"):
        provider_tokenizer(tokenizer_folder, "{% for m in messages %}{{ m.content }")
    with pytest.raises(ValidationError, match="chat_template is empty"):
        HFProvider.Config(path="x", chat_template=" ")


@pytest.mark.slow
def test_chatml_needs_its_tokens_in_the_vocabulary():
    tok = HFProvider(HFProvider.Config(path="all-minilm-l6-v2")).load_tokenizer()
    with pytest.raises(UserError, match=r"needs the tokens <\|im_start\|>, <\|im_end\|>"):
        templates.apply(tok, "chatml")


def test_a_run_trains_evaluates_and_saves_with_the_chosen_template(tiny_model, tmp_path,
                                                                   monkeypatch):
    """The template set in [model] renders the training data and ends up in model/; rows cut
    by max_length are reported on the terminal."""
    from transformers import AutoTokenizer

    template = tmp_path / "chat.jinja"
    # ChatML with a "### " before each role: tokens no default template would produce.
    custom = CHATML_TEMPLATE.replace("'<|im_start|>' + message['role']",
                                     "'<|im_start|>### ' + message['role']").replace(
        "'<|im_start|>assistant\n'", "'<|im_start|>### assistant\n'")
    template.write_text(custom, encoding="utf-8")
    pipeline = write_pipeline(tmp_path / "pipeline.toml", f"""
        [pipeline]
        name = "template"
        [model]
        path = {json.dumps(str(tiny_model))}
        chat_template = {json.dumps(str(template))}
        [data.d]
        loader = "json"
        path = {json.dumps(str(DATA / "alpaca.json"))}
        format = "alpaca"
        [[stages]]
        method = "sft"
        data = "d"
        max_steps = 1
        batch_size = 5
        max_length = 60
        [[evaluate]]
        evaluator = "generate"
        prompts = ["hi"]
        max_new_tokens = 2
    """)
    monkeypatch.setenv("FTP_TOKENIZED_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", str(pipeline), "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    # 4 of the 5 rows render longer than 60 tokens with this template (all answers start
    # before token 60): the cut is said on the terminal, on a cached second run too.
    warning = ("warning: train: 4 of 5 examples are longer than max_length=60 tokens and were "
               "cut to it (the longest has 73)")
    assert warning in result.output and "tokenized train: 5 rows in" in result.output
    again = CliRunner().invoke(cli, ["run", str(pipeline), "--output-dir", str(tmp_path / "2")])
    assert again.exit_code == 0, again.output
    assert "tokenized train: cached" in again.output and warning in again.output
    saved = AutoTokenizer.from_pretrained(out / "model")
    assert saved.chat_template == custom
    assert "### assistant" in saved.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)


def test_the_loss_evaluator_skips_and_counts_rows_with_nothing_to_score(tiny_model):
    """It may run after a long training: a row cut before its answer must not end the run."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftp import EvalContext
    from ftp_builtin.evaluators.text import Loss

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    short = {"messages": [{"role": "user", "content": "hi"},
                          {"role": "assistant", "content": "Hello there, how are you today?"}]}
    long = {"messages": [{"role": "user", "content": "Who are you? " * 20},
                         {"role": "assistant", "content": "Nova."}]}
    result = Loss(Loss.Config(max_length=30)).evaluate(
        EvalContext(stage="base", model=model, tokenizer=tok, data=[short, long]))
    assert result["metrics"]["examples"] == 1 and result["metrics"]["skipped_examples"] == 1
    assert result["metrics"]["tokens"] > 0
