"""The ``hf`` model provider: transformers models from the catalog, a folder, the Hub or GGUF."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ftp import ModelProvider, RunError, StrictConfig, UserError, hookimpl
from ftp.training import use_all_cores
from ftp_builtin import templates
from ftp_builtin.buildonce import build_once
from ftp_builtin.catalog import CATALOG, cache_dir, fetch

TASKS = {"causal-lm": "AutoModelForCausalLM", "sequence-classification":
         "AutoModelForSequenceClassification"}


class HFProvider(ModelProvider):
    """Hugging Face transformers models: catalog name, local folder, Hub id or .gguf file."""

    name = "hf"

    class Config(StrictConfig):
        """Where the model comes from and how it is placed."""

        path: str = Field(description="Catalog name, local folder, Hub id, or a .gguf file.")
        revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
        dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
            "auto", description="auto: bfloat16 on a GPU that supports it, else float32."
        )
        device: Literal["auto", "cpu", "cuda", "mps"] = Field(
            "auto", description="auto: cuda when available, else cpu."
        )
        attn_implementation: str | None = Field(None, description="e.g. sdpa, eager.")
        trust_remote_code: bool = Field(
            False, description="Run model code shipped with a Hub model (trusted sources only)."
        )
        chat_template: str | None = Field(
            None, description="The chat template for training, evaluation and the saved "
            "tokenizer: a name (" + ", ".join(templates.NAMED) + "), inline Jinja, or a path "
            "to a Jinja file (relative to the current directory). Default: the tokenizer's own.",
        )

        quantize: Literal["4bit"] | None = Field(
            None, description="QLoRA: hold the base weights in 4 bits (nf4, double "
            "quantization, bitsandbytes) while an adapter trains; the adapter is merged into "
            "the full-precision weights afterwards. Needs an adapter on every stage."
        )

        @field_validator("chat_template")
        @classmethod
        def _template(cls, value: str | None) -> str | None:
            return None if value is None else templates.check_option(value)

        @field_validator("quantize")
        @classmethod
        def _bitsandbytes(cls, value: str | None) -> str | None:
            import importlib.util

            if value is not None and importlib.util.find_spec("bitsandbytes") is None:
                raise ValueError("4-bit weights need bitsandbytes: pip install bitsandbytes")
            return value

    config: Config

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._source: Path | str | None = None
        # What the last model was loaded from: a 4-bit model's adapter is merged into the
        # full-precision weights read again from there.
        self._loaded_from: tuple[str, Path | str] | None = None

    # -- where the weights are ------------------------------------------------------------

    def source(self) -> Path | str:
        """A local folder with config + weights + tokenizer, or a Hub id."""
        if self._source is None:
            self._source = self._resolve()
        return self._source

    def check_files(self, base_dir: Path) -> list[tuple[str, str]]:
        """A local model (folder or .gguf file) exists; catalog names and Hub ids pass."""
        problem = _local_model_problem(self.config.path)
        return [("path", problem)] if problem else []

    def _resolve(self) -> Path | str:
        path = self.config.path
        entry = CATALOG.get(path)
        if entry is not None:
            fetched = fetch(entry)
            return _converted_gguf(fetched, entry.alias) if entry.kind == "gguf" else fetched
        problem = _local_model_problem(path)
        if problem:
            raise UserError(problem)
        local = Path(path).expanduser()
        if path.endswith(".gguf"):
            return _converted_gguf(local, None)
        if local.exists():
            return local
        return path  # a Hub id

    def device(self) -> str:
        """The device the model goes to."""
        import torch

        if self.config.device != "auto":
            return self.config.device
        if torch.cuda.is_available():
            return "cuda"
        return "cpu"

    def torch_dtype(self) -> Any:
        """The dtype for loading."""
        import torch

        if self.config.dtype != "auto":
            return getattr(torch, self.config.dtype)
        if self.device() == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32

    # -- loading --------------------------------------------------------------------------

    def load_tokenizer(self) -> Any:
        """Load the tokenizer; give it a pad token when it has none, and the chosen template.

        The template is set on the tokenizer object itself, which the run hands to every
        method and evaluator and finally saves with the model, so that inference renders
        conversations exactly as training did.
        """
        from transformers import AutoTokenizer

        source = self.source()
        tok = _hub_call(lambda: AutoTokenizer.from_pretrained(
            source, revision=self.config.revision, trust_remote_code=self.config.trust_remote_code
        ), source)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if self.config.chat_template is not None:
            templates.apply(tok, self.config.chat_template)
        return tok

    def rehearsal_model(self, directory: Path) -> tuple[dict[str, Any], str]:
        """A tiny random model from the real one's config.json, with the real tokenizer."""
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

        from ftp.rehearsal import shrink_config

        source = self.source()
        config = _hub_call(lambda: AutoConfig.from_pretrained(
            source, revision=self.config.revision,
            trust_remote_code=self.config.trust_remote_code), source)
        what = shrink_config(config)
        remote = self.config.trust_remote_code
        try:
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=remote)
        except ValueError:  # an encoder (MiniLM): its classifier head is added when loaded
            model = AutoModel.from_config(config, trust_remote_code=remote)
        model.save_pretrained(directory)
        self.load_tokenizer().save_pretrained(directory)
        options = {**self.config.model_dump(exclude_defaults=True), "path": str(directory),
                   "revision": None}
        return {k: v for k, v in options.items() if v is not None}, what

    def load_model(self, task: str, init_from: Path | None = None, **options: Any) -> Any:
        """Load the model for ``task`` on the chosen device and dtype."""
        import transformers

        if task not in TASKS:
            raise RunError(f"provider 'hf' cannot load models for task {task!r}")
        use_all_cores()
        cls = getattr(transformers, TASKS[task])
        source = init_from or self.source()
        kwargs: dict[str, Any] = {"dtype": self.torch_dtype(),
                                  "trust_remote_code": self.config.trust_remote_code}
        if self.config.revision and init_from is None:
            kwargs["revision"] = self.config.revision
        if self.config.attn_implementation:
            kwargs["attn_implementation"] = self.config.attn_implementation
        kwargs.update(options)
        self._loaded_from = (task, source)
        if self.config.quantize:
            kwargs["quantization_config"] = self._four_bit(kwargs["dtype"])
            # A quantized model is placed while it loads; it cannot be moved afterwards.
            kwargs["device_map"] = {"": self.device()}
            return _hub_call(lambda: cls.from_pretrained(source, **kwargs), source)
        model = _hub_call(lambda: cls.from_pretrained(source, **kwargs), source)
        return model.to(self.device())

    def meta_model(self, task: str, **options: Any) -> Any:
        """The model for ``task`` built from its config on torch's meta device.

        Its shape and parameter count, without reading (or needing) any weights.

        Used by ``ftp models compare`` and ``ftp plan``; a folder holding only a config.json
        (an 8B model's config copied from its card) is enough.
        """
        import torch
        import transformers
        from transformers import AutoConfig

        if task not in TASKS:
            raise RunError(f"provider 'hf' cannot build models for task {task!r}")
        source = self.source()
        config = _hub_call(lambda: AutoConfig.from_pretrained(
            source, revision=self.config.revision,
            trust_remote_code=self.config.trust_remote_code, **options), source)
        if self.config.attn_implementation:
            config._attn_implementation = self.config.attn_implementation
        cls = getattr(transformers, TASKS[task])
        with torch.device("meta"):
            return cls.from_config(config, trust_remote_code=self.config.trust_remote_code)

    def weights_present(self) -> bool:
        """Whether the model has weights to load (False: a config-only folder)."""
        source = self.source()
        if not isinstance(source, Path):
            return True  # a Hub id: from_pretrained finds out
        return any(source.glob("*.safetensors")) or any(source.glob("*.bin")) \
            or any(source.glob("*.gguf")) or any(source.glob("*.pt"))

    def _four_bit(self, dtype: Any) -> Any:
        """QLoRA's quantization: nf4 weights, quantized constants, compute in ``dtype``."""
        import torch
        from transformers import BitsAndBytesConfig

        from ftp.training import native_bf16

        compute = torch.bfloat16 if native_bf16(self.device() == "cuda") else dtype
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute)

    # -- adapters -------------------------------------------------------------------------

    def apply_adapter(self, model: Any, adapter: Any) -> Any:
        """Wrap with a LoRA adapter (peft)."""
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        task_type = "SEQ_CLS" if _is_classifier(model) else "CAUSAL_LM"
        config = LoraConfig(
            r=adapter.r,
            lora_alpha=adapter.alpha,
            lora_dropout=adapter.dropout,
            target_modules=adapter.target_modules,
            # A copy: peft appends a classifier's head to this list in place.
            modules_to_save=list(adapter.modules_to_save) or None,
            task_type=task_type,
            use_dora=adapter.use_dora,
        )
        if _quantized(model):
            # Norms and head in full precision, inputs that carry gradients: peft's recipe.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        try:
            return get_peft_model(model, config)
        except ValueError as exc:
            raise UserError(f"adapter: {exc}") from None

    def save_adapter(self, model: Any, directory: Path) -> None:
        """Save the adapter weights and config only."""
        model.save_pretrained(str(directory))

    def merge_adapter(self, model: Any) -> Any:
        """Merge LoRA weights into the base model and drop the peft wrapper."""
        from peft import PeftModel

        if not isinstance(model, PeftModel):
            return model
        if _quantized(model) and self._loaded_from is not None:
            return self._merged_into_full_precision(model)
        return model.merge_and_unload()

    def _merged_into_full_precision(self, model: Any) -> Any:
        """A 4-bit model's adapter merged into the full-precision weights it was made from.

        Merging into the 4-bit weights would round the update away (and save 4-bit weights);
        the base is read again in full precision and the same adapter is applied to it.
        """
        import tempfile

        import transformers
        from peft import PeftModel

        assert self._loaded_from is not None
        task, source = self._loaded_from
        cls = getattr(transformers, TASKS[task])
        kwargs: dict[str, Any] = {"dtype": self.torch_dtype(),
                                  "trust_remote_code": self.config.trust_remote_code}
        if self.config.revision and not isinstance(source, Path):
            kwargs["revision"] = self.config.revision
        with tempfile.TemporaryDirectory(prefix="ftp-qlora-") as tmp:
            model.save_pretrained(tmp)
            base = _hub_call(lambda: cls.from_pretrained(source, **kwargs), source)
            full = PeftModel.from_pretrained(base.to(self.device()), tmp)
            return full.merge_and_unload()

    def save(self, model: Any, tokenizer: Any, directory: Path) -> None:
        """Save model, tokenizer and generation config as a plain transformers folder."""
        model = self.merge_adapter(model)
        # Trainers switch the KV cache off for training; the saved model is for inference.
        model.config.use_cache = True
        model.save_pretrained(str(directory))
        tokenizer.save_pretrained(str(directory))


def _local_model_problem(path: str) -> str | None:
    """What is wrong with ``path`` as a local model, or None (also for catalog names, Hub ids).

    Like ``from_pretrained``, a relative path is relative to the current directory.
    """
    if path in CATALOG:
        return None
    local = Path(path).expanduser()
    if path.endswith(".gguf"):
        return None if local.is_file() else f"GGUF file not found: {local}"
    if local.exists():
        return None if (local / "config.json").is_file() else \
            f"{local} is not a model folder (no config.json)"
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        return f"model folder not found: {local}"
    return None


def _quantized(model: Any) -> bool:
    """Whether ``model`` (or the model inside a peft wrapper) holds 4-bit weights."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(inner, "is_loaded_in_4bit", False))


def _is_classifier(model: Any) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


def _hub_call(fn: Any, source: Any) -> Any:
    try:
        return fn()
    except OSError as exc:
        if isinstance(source, Path):
            raise UserError(f"could not load {source}: {exc}") from None
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = ("the Hub is disabled (HF_HUB_OFFLINE=1)" if offline else
                "is the Hub reachable and the id right?")
        raise UserError(f"could not load {source!r} from the Hugging Face Hub ({hint}); "
                        f"offline names: {', '.join(CATALOG)}") from None


#: Bump when the conversion below changes what it writes: cached conversions are rebuilt.
CONVERTER_VERSION = 2


def _converted_gguf(gguf: Path, alias: str | None) -> Path:
    """Dequantize a GGUF file once into a cached safetensors folder; return the folder.

    The folder is keyed on its source (the catalog package's pinned hash, or the file's path,
    size and time) and on the converter: this code's version and those of transformers and
    gguf, which do the reading.
    """
    from importlib.metadata import PackageNotFoundError, version

    from ftp.hashing import digest

    entry = CATALOG.get(alias or "")
    source: dict[str, Any]
    if entry is not None:
        source = {"package": entry.package, "version": entry.version, "sha256": entry.sha256}
    else:
        stat = gguf.stat()
        source = {"file": str(gguf.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns}
    versions: dict[str, str | None] = {}
    for name in ("transformers", "gguf"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    stamp = {"source": source, "converter": CONVERTER_VERSION, **versions}
    key = digest(stamp)[:16]
    folder = cache_dir() / "models" / (f"{alias}-{key}" if alias else key)
    return build_once(folder, stamp, lambda tmp: _convert(gguf, tmp))


def _convert(gguf: Path, dest: Path) -> None:
    """Write the dense model and tokenizer read from ``gguf`` into ``dest``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
    except Exception as exc:
        raise RunError(f"could not read GGUF file {gguf}: {exc}") from None
    # transformers keeps a GGUF quantizer attached even though the weights are now dense
    # floats; with it, saving and training refuse. Detach it: this is a plain model now.
    # transformers declares these attributes loosely (a Module's __setattr__ types).
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))


@hookimpl
def ftp_model_providers() -> list[type]:
    """Register the ``hf`` provider."""
    return [HFProvider]
