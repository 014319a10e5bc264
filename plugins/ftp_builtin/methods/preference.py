"""Preference tuning: ``dpo`` (TRL DPOTrainer), ``kto`` (TRL KTOTrainer), and their base.

`PreferenceMethod` is what a preference method on a TRL trainer shares: tokenizing through
the tokenized-data cache, the reference model (optional: a reference-free method such as ORPO
sets ``uses_reference = False``), the leaner LM head, and the tokenized counts in
metrics.jsonl. A method on it names its TRL config and trainer classes and their options.

Records arrive in TRL's conversational forms (``ftp_builtin.formats.preference``), so TRL
renders them through the tokenizer's own chat template: the prompt with the generation prompt,
and prompt + answer as one conversation; the answer's tokens are where the two renderings part.

The reference model is the model the stage starts from, never a second download:

- with an adapter, the base with the adapter disabled. TRL 1.x copies a PEFT model's adapter
  into a frozen ``ref`` adapter; ftp's adapter is always freshly initialised (an identity), so
  that copy is dropped again and TRL falls back to disabling the adapter — no second set of
  weights, and one LoRA pass less per reference forward;
- without one, the reference log-probabilities are computed once, before training, from the
  model as it is (``precompute_ref_log_probs``): no copy in memory. TRL's own fallback would
  reload the weights named in the model's config, which after an earlier stage are not the
  weights this stage starts from. With ``precompute_ref_log_probs = false`` a copy of the
  starting model is the reference.

A pair longer than ``max_length`` is fitted by ``truncation_mode`` (``ftp_builtin.truncation``):
by default its prompt loses its start, so the question at its end and the answers survive.
TRL's own length handling, which drops a pair whose prompt alone fills ``max_length``, is
left unused (``ftp_builtin.methods.pairs``).

On CPU the LM head TRL patches in is swapped for a leaner one (``ftp_builtin.methods.lm_head``):
the same log-probabilities, 1.3x (examples/dpo.toml, 2 cores) to 1.8x (one core) faster training,
and where the head is a plain linear layer, a chunk of answer positions at a time (``ftp plan``
estimates one chunk's logits: `ChunkedHead`; on GPUs TRL's fused head is chunked too).
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ftp import Shape, TrainContext, TrainerMethod, TrainingOptions, hookimpl
from ftp.components import TokenizedExample
from ftp_builtin.methods.common import ChunkedHead
from ftp_builtin.methods.lm_head import use_lean_lm_head
from ftp_builtin.methods.pairs import INDEX, fit_rows, report, untruncated
from ftp_builtin.methods.tokenized import cached_dataset, plugin_identity, preference_examples
from ftp_builtin.tokenize import require_chat_template
from ftp_builtin.truncation import TRUNCATION_HELP, TruncationMode

DPOLoss = Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair",
                  "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft",
                  "sigmoid_norm"]


class PreferenceOptions(TrainingOptions):
    """What preference methods share: the training options plus beta and sequence handling."""

    learning_rate: float = Field(
        5e-6, gt=0, description="DPO/KTO move far with little: 5e-6 suits full finetuning; "
        "with a LoRA adapter use more, e.g. 5e-5 to 2e-4."
    )
    beta: float = Field(0.1, gt=0, description="How far the model may move from the reference; "
                        "higher keeps it closer.")
    max_length: int = Field(1024, gt=0, description="The most tokens of prompt + answer; "
                            "longer pairs are fitted by truncation_mode.")
    truncation_mode: TruncationMode = Field("keep_end", description=TRUNCATION_HELP)


class ReferenceOptions(PreferenceOptions):
    """Options of a preference method that compares against a reference model."""

    precompute_ref_log_probs: bool | None = Field(
        None, description="Compute the reference log-probabilities once before training. "
        "Default: on without an adapter (no copy of the model in memory), off with one."
    )


class PreferenceMethod(ChunkedHead, TrainerMethod):
    """Base of a preference method on a TRL trainer (DPO, KTO; reference-free ones too).

    A subclass sets ``name``, ``accepts``, a ``Config`` (`PreferenceOptions`, or
    `ReferenceOptions` when it uses a reference model), ``answers`` and ``uses_reference``,
    and implements `trl_trainer` (and `trl_options` for its own options).
    """

    class Config(PreferenceOptions):
        """The preference options (subclass `PreferenceOptions` for a method's own)."""

    config: PreferenceOptions
    task = "causal-lm"
    out_of_memory_hint = "batch_size or max_length"
    # Built inside the training set-up: precomputed reference log-probabilities then come
    # from the same (bf16) frozen weights as the policy's.
    build_while_training = True
    #: Whether the trainer compares against a reference model (the stage's starting model).
    uses_reference: ClassVar[bool] = True
    #: The answer columns of a training row, as TRL tokenizes them.
    answers: ClassVar[tuple[str, ...]] = ("chosen", "rejected")

    def trl_trainer(self) -> tuple[Any, Any]:
        """The TRL (config class, trainer class), e.g. ``(DPOConfig, DPOTrainer)``."""
        raise NotImplementedError

    def trl_options(self) -> dict[str, Any]:
        """Options of the TRL config beyond ftp's training and preference options."""
        return {}

    def trainer(self, ctx: TrainContext) -> Any:
        """The TRL trainer this method trains with (TRL tokenizes ``ctx.train`` here)."""
        from datasets import Dataset
        from transformers import set_seed

        set_seed(ctx.seed)
        require_chat_template(ctx.tokenizer)
        cfg = self.config
        config_cls, trainer_cls = self.trl_trainer()
        extra: dict[str, Any] = {"beta": cfg.beta, "max_length": cfg.max_length,
                                 "eval_strategy": "no"}
        reference: dict[str, Any] = {}
        if self.uses_reference:
            precompute = _precompute(cfg, ctx)
            extra["precompute_ref_log_probs"] = precompute
            reference["ref_model"] = _reference_copy(ctx, precompute)
        args = self.arguments(ctx, config_cls, **extra, **self.trl_options())
        trainer = self.fitting_trainer(trainer_cls, ctx)(
            model=ctx.model,
            args=args,
            train_dataset=Dataset.from_list(ctx.train),
            processing_class=ctx.tokenizer,
            callbacks=ctx.callbacks,
            **reference,
        )
        _drop_reference_adapter(trainer.model)
        for model in (trainer.model, getattr(trainer, "ref_model", None)):
            if model is not None:
                use_lean_lm_head(model)
        return trainer

    def fitting_trainer(self, trainer_cls: Any, ctx: TrainContext) -> Any:
        """``trainer_cls`` whose training rows are fitted into max_length the ftp way.

        Whatever the TRL trainer, the subclass it returns keeps what fitting did (a
        `ftp_builtin.methods.pairs.Fitted`) as ``ftp_fitted``, which `prepared` reports.
        """
        return _with_cached_tokens(trainer_cls, ctx, self.config, self.answers)

    def prepared(self, ctx: TrainContext, trainer: Any) -> None:
        """Say what fitting the pairs into max_length did; log the counts."""
        what = "answers" if self.answers == ("completion",) else "pairs"
        report(ctx, trainer.ftp_fitted, self.config.max_length, self.config.truncation_mode,
               what)

    def while_training(self, ctx: TrainContext) -> contextlib.AbstractContextManager[Any]:
        """TRL's reference precompute draws its own progress bar; ftp shows its own."""
        return _quiet_progress()

    def tokenize_examples(self, tokenizer: Any, records: Sequence[dict[str, Any]]
                          ) -> list[TokenizedExample] | None:
        """Each record as the TRL trainer tokenizes it: the prompt, then each answer."""
        require_chat_template(tokenizer)
        return preference_examples(tokenizer, records, self.answers, self.config.max_length,
                                   self.config.truncation_mode)


class DPO(PreferenceMethod):
    """Direct preference optimisation on chosen/rejected pairs (TRL DPOTrainer)."""

    name = "dpo"
    accepts = frozenset({Shape.PREFERENCE})

    class Config(ReferenceOptions):
        """DPO options: the preference options plus the loss."""

        loss_type: DPOLoss = Field("sigmoid", description="The DPO loss variant (TRL's names).")
        label_smoothing: float = Field(
            0.0, ge=0, description="For 'robust' (flip probability, < 0.5) and 'exo_pair' (> 0)."
        )

        @model_validator(mode="after")
        def _smoothing_fits_the_loss(self) -> DPO.Config:
            if self.loss_type == "exo_pair" and self.label_smoothing == 0:
                raise ValueError("loss_type 'exo_pair' needs label_smoothing > 0 (e.g. 1e-3)")
            if self.loss_type == "robust" and self.label_smoothing >= 0.5:
                raise ValueError("loss_type 'robust' needs label_smoothing < 0.5")
            return self

    config: Config

    def trl_trainer(self) -> tuple[Any, Any]:
        """TRL's DPOConfig and DPOTrainer."""
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer

    def trl_options(self) -> dict[str, Any]:
        """The loss and its label smoothing.

        ftp fits every pair into max_length itself (``ftp_builtin.methods.pairs``): TRL's
        collator then finds nothing left to cut, whatever its truncation_mode.
        """
        cfg = self.config
        return {"loss_type": [cfg.loss_type], "label_smoothing": cfg.label_smoothing}


class KTO(PreferenceMethod):
    """Kahneman-Tversky optimisation on answers labelled desirable or not (TRL KTOTrainer)."""

    name = "kto"
    #: Pairs are split by TRL into a desirable and an undesirable answer each.
    accepts = frozenset({Shape.UNPAIRED_PREFERENCE, Shape.PREFERENCE})
    answers = ("completion",)

    class Config(ReferenceOptions):
        """KTO options: the preference options plus the loss and the class weights."""

        loss_type: Literal["kto", "apo_zero_unpaired"] = Field(
            "kto", description="The unpaired loss (TRL's names)."
        )
        desirable_weight: float = Field(
            1.0, gt=0, description="Weight of desirable answers' losses (balance the classes)."
        )
        undesirable_weight: float = Field(
            1.0, gt=0, description="Weight of undesirable answers' losses."
        )

        @model_validator(mode="after")
        def _kl_needs_a_batch(self) -> KTO.Config:
            if self.loss_type == "kto" and self.batch_size < 2:
                raise ValueError("loss_type 'kto' estimates its KL term from the other answers "
                                 "of a batch: batch_size must be at least 2")
            return self

    config: Config

    def trl_trainer(self) -> tuple[Any, Any]:
        """TRL's KTOConfig and KTOTrainer."""
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer

    def trl_options(self) -> dict[str, Any]:
        """The loss and the weights of desirable and undesirable answers."""
        cfg = self.config
        return {"loss_type": cfg.loss_type, "desirable_weight": cfg.desirable_weight,
                "undesirable_weight": cfg.undesirable_weight}

    def tokenize_examples(self, tokenizer: Any, records: Sequence[dict[str, Any]]
                          ) -> list[TokenizedExample]:
        """Each answer as KTOTrainer tokenizes it; a pair shows both of its answers."""
        require_chat_template(tokenizer)
        paired = bool(records) and "chosen" in records[0]
        return preference_examples(tokenizer, records,
                                   ("chosen", "rejected") if paired else ("completion",),
                                   self.config.max_length, self.config.truncation_mode)


def _precompute(cfg: PreferenceOptions, ctx: TrainContext) -> bool:
    """Precompute the reference log-probabilities: as asked, else without an adapter."""
    asked = cfg.precompute_ref_log_probs if isinstance(cfg, ReferenceOptions) else None
    return (ctx.adapter is None) if asked is None else asked


def _reference_copy(ctx: TrainContext, precompute: bool) -> Any:
    """The reference model to hand TRL: None where TRL needs none of its own.

    With an adapter TRL disables it for the reference; precomputed log-probabilities come from
    the model as it is. Otherwise the reference is a frozen copy of the model this stage starts
    from (TRL would reload the config's weights, the wrong ones in a chain).
    """
    if ctx.adapter is not None or precompute:
        return None
    ref_model = copy.deepcopy(ctx.model).eval()
    ref_model.requires_grad_(False)
    # An earlier preference stage left its LM-head patch on the model (an instance
    # attribute); the copy's would call the original model, so give it its class's forward.
    if "forward" in ref_model.__dict__:
        del ref_model.forward
    return ref_model


def _with_cached_tokens(trainer_cls: Any, ctx: TrainContext, cfg: PreferenceOptions,
                        answers: tuple[str, ...]) -> Any:
    """``trainer_cls`` whose dataset tokenization goes through the tokenized-data cache.

    TRL tokenizes whole pairs (cached); ftp then fits them into ``max_length``
    (`fit_rows`) and keeps what it did as ``ftp_fitted`` on the trainer.
    """
    from importlib.metadata import version

    from datasets import Dataset

    class _Cached(trainer_cls):
        def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any,
                             dataset_name: str) -> Any:
            options = {"method": trainer_cls.__name__, "trl": version("trl")}

            def tokenize() -> Any:
                # The index names each row's source file and line if it has to be skipped.
                indexed = dataset.add_column(INDEX, list(range(len(dataset))))
                with untruncated(args):
                    return super(_Cached, self)._prepare_dataset(indexed, processing_class,
                                                                 args, dataset_name)

            tokenized = cached_dataset(ctx, dataset_name, dataset.to_list(), options,
                                       plugin_identity(sys.modules[__name__]), tokenize)
            self.ftp_fitted = fit_rows(ctx, tokenized.to_list(), answers, cfg.max_length,
                                       cfg.truncation_mode)
            return Dataset.from_list(self.ftp_fitted.rows)

    _Cached.__name__ = _Cached.__qualname__ = trainer_cls.__name__
    return _Cached


def _drop_reference_adapter(model: Any) -> None:
    """Delete the ``ref`` adapter TRL copies from a fresh (identity) one; the base is the same."""
    config = getattr(model, "peft_config", None)
    if isinstance(config, dict) and "ref" in config and "default" in config:
        model.delete_adapter("ref")


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """TRL's reference precompute draws a tqdm bar unless TQDM_DISABLE is set; ftp shows its own."""
    if "TQDM_DISABLE" in os.environ:
        yield
        return
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        os.environ.pop("TQDM_DISABLE", None)


@hookimpl
def ftp_methods() -> list[type]:
    """Register ``dpo`` and ``kto``."""
    return [DPO, KTO]
