"""Job configurations: what a `distill` or `evaluate` job may ask the trainer to do.

These pydantic models are validated by the API at submit time and passed unchanged (as JSON) to the worker,
so a job that would fail on a bad key or an impossible combination fails before it is queued. Every field
has a default, a range and a description; unknown keys are rejected everywhere (`extra="forbid"`), with the
offending path in the error. The module is torch-free on purpose: `app/` never imports torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

__all__ = [
    "CaptureConfig",
    "CurriculumConfig",
    "DistillConfig",
    "EvaluateConfig",
    "LoraConfig",
    "LossConfig",
    "ResourcesConfig",
    "TrainingConfig",
]

DEFAULT_STUDENT = "Qwen/Qwen2.5-0.5B-Instruct"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LossConfig(_Strict):
    """L = α·L_reason + β·L_action + γ·L_curriculum (DESIGN §5)."""

    mode: Literal["span", "flat"] = Field(
        default="span",
        description="'span': separate reason/action losses; 'flat': one token-level loss over all assistant "
        "tokens (the baseline for ablations).",
    )
    weighting: Literal["fixed", "learnable"] = Field(
        default="fixed",
        description="'fixed': α and β as given; 'learnable': uncertainty weighting exp(-s_k)·L_k + s_k, s_k "
        "learned from 0 (weights start at 1; α and β are then unused).",
    )
    alpha: float = Field(default=1.0, ge=0.0, le=100.0, description="Weight of L_reason (fixed weighting).")
    beta: float = Field(default=1.0, ge=0.0, le=100.0, description="Weight of L_action (fixed weighting).")
    gamma: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description="Weight of the curriculum term (complexity-weighted example losses); 0 = off.",
    )
    temperature: float = Field(
        default=1.0, ge=0.1, le=20.0, description="Softmax temperature of the reason KL (the loss is scaled by T²)."
    )
    pcgrad: StrictBool = Field(
        default=False,
        description="Project conflicting reason/action gradients (PCGrad); costs a second backward pass.",
    )
    chunk_size: int = Field(
        default=1024,
        ge=16,
        le=65536,
        description="Supervised positions per chunk when computing KL/CE from hidden states.",
    )
    teacher_signal: Literal["online", "offline", "none"] = Field(
        default="none",
        description="'online': KL to a teacher model run on the worker (needs teacher_model); 'offline': KL to "
        "the top-k teacher log-probs a `capture` job stored (needs teacher_model, to find the capture; the teacher "
        "is not loaded); 'none': cross-entropy on the trajectory's own tokens. Defaults to 'online' when "
        "teacher_model is set.",
    )
    capture: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="teacher_signal='offline': 'job:<id>' of a succeeded capture job; omitted = the newest "
        "succeeded capture matching this job (dataset content, teacher, tokenizer and template, max_seq_len, "
        "temperature). The API stores the capture's folder here.",
    )
    weighting_lr: float = Field(
        default=1e-3,
        gt=0.0,
        le=1.0,
        description="Learning rate of the learnable log-variances s_k (usually above the model lr).",
    )


class CurriculumConfig(_Strict):
    """Order in which training examples are drawn (DESIGN §5, Curriculum)."""

    schedule: Literal["none", "sorted", "competence"] = Field(
        default="none",
        description="'none': seeded shuffle per epoch; 'sorted': simple → complex every epoch; 'competence': "
        "sample from the easiest c(t) fraction, c(t) = min(1, sqrt(t(1-c0²)/T + c0²)).",
    )
    initial_competence: float = Field(
        default=0.1,
        ge=0.01,
        le=1.0,
        description="c0: fraction of the easiest examples eligible at step 0 (competence).",
    )
    competence_steps: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="T: steps until every example is eligible (competence); None = half the total steps.",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the sampler (shuffles, competence draws).")


class LoraConfig(_Strict):
    """Low-rank adapters via peft (install the `lora` extra)."""

    r: int = Field(default=16, ge=1, le=1024, description="Adapter rank.")
    alpha: int = Field(default=32, ge=1, le=4096, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(default=0.0, ge=0.0, le=0.9, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear", description="Module names to adapt, or 'all-linear'."
    )


class TrainingConfig(_Strict):
    """Optimisation, batching, checkpointing and evaluation of one run."""

    max_steps: int = Field(
        default=1000, ge=1, le=10_000_000, description="Optimizer steps (upper bound if epochs is set)."
    )
    epochs: float | None = Field(
        default=None,
        gt=0.0,
        le=1000.0,
        description="If set, train for this many passes over the train split (capped by max_steps).",
    )
    micro_batch_size: int = Field(default=4, ge=1, le=1024, description="Examples per forward/backward on one device.")
    grad_accum_steps: int = Field(default=1, ge=1, le=1024, description="Micro-batches accumulated per optimizer step.")
    lr: float = Field(default=2e-5, gt=0.0, le=1.0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(
        default=0.0, ge=0.0, le=1.0, description="AdamW decoupled weight decay (matrices only)."
    )
    warmup_steps: int = Field(default=0, ge=0, le=10_000_000, description="Linear warmup steps.")
    min_lr_ratio: float = Field(default=0.1, ge=0.0, le=1.0, description="Cosine decay floor as a fraction of lr.")
    max_grad_norm: float = Field(
        default=1.0, ge=0.0, le=1e6, description="Gradient clipping norm; 0 disables clipping."
    )
    max_seq_len: int = Field(
        default=2048, ge=16, le=262_144, description="Tokens per rendered example (whole steps are dropped to fit)."
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of python/numpy/torch RNGs.")
    checkpoint_every: int = Field(
        default=500,
        ge=0,
        le=10_000_000,
        description="Save a checkpoint every N steps (0 = only on stop and at the end).",
    )
    keep_checkpoints: int = Field(default=2, ge=1, le=1000, description="Number of most recent checkpoints kept.")
    gradient_checkpointing: StrictBool = Field(
        default=False, description="Recompute activations in backward to save memory."
    )
    bf16: StrictBool | Literal["auto"] = Field(
        default="auto", description="bf16 autocast; 'auto' = on when training on a CUDA device with bf16 support."
    )
    lora: LoraConfig | None = Field(default=None, description="Train LoRA adapters instead of all weights.")
    eval_every: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Also evaluate every N steps (None = before and after only)."
    )
    eval_max_examples: int = Field(
        default=200, ge=0, le=100_000, description="Eval-split examples scored (0 = no eval)."
    )
    action_exact_match_max: int = Field(
        default=200, ge=0, le=100_000, description="Action spans scored for greedy exact match per evaluation."
    )
    tool_call_syntax: Literal["native", "hermes"] = Field(
        default="native",
        description="How tool calls are rendered for training. 'native': passed to the student's chat template as "
        "structured tool_calls, so the student learns its own family's syntax (Llama 3.x JSON, Hermes for Qwen); "
        "templates that cannot take them fall back to the canonical text, counted as native_fallback. "
        "'hermes': always the canonical Hermes <tool_call> text.",
    )


class ResourcesConfig(_Strict):
    """Where the job runs."""

    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="'auto' = CUDA when available.")
    gpus: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes (one per GPU; CPU processes with device=cpu); >1 runs under torchrun.",
    )
    nodes: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Nodes of a Slurm allocation, each running `gpus` processes (world size = nodes × gpus); "
        ">1 submits the job to Slurm.",
    )
    launcher: Literal["auto", "inprocess", "torchrun", "slurm"] = Field(
        default="auto",
        description="How the worker starts the training: 'auto' = Slurm when nodes > 1, torchrun when gpus > 1, "
        "else in the worker's own process; 'slurm' submits even a one-node job to Slurm (sbatch + srun torchrun).",
    )
    parallelism: Literal["ddp", "fsdp"] = Field(
        default="ddp",
        description="How several processes share the student: 'ddp' = a full copy per process, gradients averaged; "
        "'fsdp' = FSDP2 (`fully_shard` per transformer block): parameters, gradients and optimizer state sharded "
        "over the processes, for students that do not fit one GPU. Checkpoints are gathered (the same files "
        "either way). One process ignores it.",
    )

    @model_validator(mode="after")
    def _launcher_fits(self) -> ResourcesConfig:
        if self.nodes > 1 and self.launcher in ("inprocess", "torchrun"):
            raise ValueError(f"resources.nodes={self.nodes} needs launcher 'slurm' (or 'auto')")
        if self.gpus > 1 and self.launcher == "inprocess":
            raise ValueError(f"resources.gpus={self.gpus} runs several processes: use launcher 'torchrun', 'slurm' "
                             "or 'auto'")
        return self


class DistillConfig(_Strict):
    """The configuration of a `distill` job."""

    student_model: str = Field(
        default=DEFAULT_STUDENT, min_length=1, max_length=512, description="Hub id or local path of the student."
    )
    teacher_model: str | None = Field(
        default=None, min_length=1, max_length=512, description="Hub id or local path of the teacher (for KL)."
    )
    loss: LossConfig = Field(default_factory=LossConfig, description="Loss terms and weights.")
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig, description="Example order.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Optimisation and checkpoints.")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="Devices and processes.")

    @model_validator(mode="before")
    @classmethod
    def _teacher_signal_follows_teacher(cls, data: Any) -> Any:
        # A teacher without an explicit signal means "distil from it"; an explicit choice is kept as given.
        if isinstance(data, dict) and data.get("teacher_model"):
            loss = data.get("loss")
            if loss is None:
                data = {**data, "loss": {"teacher_signal": "online"}}
            elif isinstance(loss, dict) and "teacher_signal" not in loss:
                data = {**data, "loss": {**loss, "teacher_signal": "online"}}
        return data

    @model_validator(mode="after")
    def _check_combinations(self) -> DistillConfig:
        loss, train = self.loss, self.training
        if loss.teacher_signal == "online" and not self.teacher_model:
            raise ValueError("loss.teacher_signal='online' needs teacher_model (a hub id or path)")
        if loss.teacher_signal == "offline":
            if not self.teacher_model:
                raise ValueError("loss.teacher_signal='offline' needs teacher_model (it names the capture to use)")
            if loss.mode == "flat":
                raise ValueError("loss.teacher_signal='offline' covers reason positions only; use loss.mode='span'")
        elif loss.capture is not None:
            raise ValueError("loss.capture is only used with loss.teacher_signal='offline'")
        if loss.mode == "flat":
            if loss.weighting == "learnable":
                raise ValueError("loss.mode='flat' has a single loss term; use weighting='fixed'")
            if loss.pcgrad:
                raise ValueError("loss.pcgrad needs two loss terms; it is not available with mode='flat'")
        if loss.weighting == "fixed" and loss.alpha == 0 and loss.beta == 0 and loss.gamma == 0:
            raise ValueError("alpha, beta and gamma are all 0: nothing to train")
        if train.warmup_steps > train.max_steps:
            raise ValueError("training.warmup_steps must not exceed training.max_steps")
        if train.bf16 is True and self.resources.device == "cpu":
            raise ValueError("training.bf16=true needs a CUDA device (bf16 autocast is CUDA-only)")
        if self.resources.parallelism == "fsdp" and loss.pcgrad:
            raise ValueError("loss.pcgrad projects whole gradients; it is not available with "
                             "resources.parallelism='fsdp'")
        if self.resources.parallelism == "fsdp" and train.lora is not None:
            raise ValueError("training.lora is not available with resources.parallelism='fsdp' (LoRA students fit one "
                             "GPU: use 'ddp')")
        return self


class EvaluateConfig(_Strict):
    """The configuration of an `evaluate` job: score a model on a dataset split, no training."""

    student_model: str = Field(
        default=DEFAULT_STUDENT, min_length=1, max_length=512, description="Hub id or path of the model to score."
    )
    teacher_model: str | None = Field(
        default=None, min_length=1, max_length=512, description="Teacher for KL on reason tokens (optional)."
    )
    split: Literal["eval", "train", "all"] = Field(default="eval", description="Which dataset split to score.")
    max_seq_len: int = Field(default=2048, ge=16, le=262_144, description="Tokens per rendered example.")
    max_examples: int = Field(default=200, ge=1, le=100_000, description="Examples scored.")
    tool_call_syntax: Literal["native", "hermes"] = Field(
        default="native",
        description="How tool calls are rendered, as in a distill job's training.tool_call_syntax: score a "
        "student with the syntax it was trained with.",
    )
    action_exact_match_max: int = Field(
        default=200, ge=0, le=100_000, description="Action spans scored for exact match."
    )
    batch_size: int = Field(default=4, ge=1, le=1024, description="Examples per forward pass.")
    chunk_size: int = Field(default=1024, ge=16, le=65536, description="Supervised positions per logits chunk.")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="Device.")

    @model_validator(mode="after")
    def _single_process(self) -> EvaluateConfig:
        if self.resources.gpus != 1:
            raise ValueError("evaluate jobs run in one process; set resources.gpus=1")
        if self.resources.nodes != 1 or self.resources.launcher not in ("auto", "inprocess"):
            raise ValueError("evaluate jobs run in the worker's own process; set resources.nodes=1 and launcher "
                             "'auto' or 'inprocess'")
        return self


class CaptureConfig(_Strict):
    """The configuration of a `capture` job: run a teacher once over a dataset's train split and store, for
    every reason position, its top-k log-probs and the leftover mass (DESIGN §5, offline teacher signal)."""

    teacher_model: str = Field(min_length=1, max_length=512, description="Hub id or path of the teacher.")
    student_model: str = Field(
        default=DEFAULT_STUDENT, min_length=1, max_length=512,
        description="The student whose tokenizer and chat template render the data, exactly as its distill jobs "
        "render it (only its tokenizer is loaded).",
    )
    top_k: int = Field(default=32, ge=1, le=1024, description="Teacher log-probs kept per reason position.")
    temperature: float = Field(
        default=1.0, ge=0.1, le=20.0,
        description="Softmax temperature of the stored log-probs; an offline distill job's loss.temperature must "
        "equal it.",
    )
    max_seq_len: int = Field(
        default=2048, ge=16, le=262_144,
        description="Tokens per rendered example; an offline distill job's training.max_seq_len must equal it.",
    )
    tool_call_syntax: Literal["native", "hermes"] = Field(
        default="native",
        description="How tool calls are rendered (the positions the signal is stored at); an offline distill "
        "job's training.tool_call_syntax must equal it.",
    )
    batch_size: int = Field(default=4, ge=1, le=1024, description="Examples per teacher forward pass.")
    shard_size: int = Field(
        default=256, ge=1, le=1_000_000,
        description="Examples per shard: each shard is written and committed when done, and a resumed capture "
        "skips the shards it finds.",
    )
    chunk_size: int = Field(default=1024, ge=16, le=65536, description="Reason positions per logits chunk.")
    resources: ResourcesConfig = Field(
        default_factory=ResourcesConfig,
        description="Device and processes: gpus > 1 runs that many ranks under torchrun, each taking every "
        "gpus-th shard.",
    )

    @field_validator("resources")
    @classmethod
    def _one_machine(cls, res: ResourcesConfig) -> ResourcesConfig:
        if res.nodes != 1 or res.launcher == "slurm":
            raise ValueError("capture jobs run on one machine: in the worker's process (gpus=1) or in gpus processes "
                             "under torchrun; set nodes=1 and launcher 'auto', 'inprocess' or 'torchrun'")
        return res
