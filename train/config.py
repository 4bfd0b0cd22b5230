"""Training arguments: three dataclasses read from a YAML recipe, overridable on the command line.

`ModelArgs` and `DataArgs` are ours; the third is TRL's `SFTConfig` (all of transformers'
TrainingArguments plus SFT options). `TrlParser` reads `--config recipe.yaml` and then applies
`--key value` overrides, the same way TRL's own scripts do.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelArgs:
    model_name_or_path: str = field(default="", metadata={"help": "Local model folder (safetensors)."})
    load_in_4bit: bool = field(default=True, metadata={"help": "QLoRA: nf4 + double quant base weights."})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names to adapt; empty = the model family's default (+ lm_head)."})
    lora_top_layers: int = field(
        default=0, metadata={"help": "[ours] Adapt only the top N decoder layers (and lm_head); 0 = every layer "
                             "(the study). Backward then stops at the lowest adapted layer."})
    cache_frozen_layers: bool = field(
        default=False, metadata={"help": "[ours] With lora_top_layers: compute the frozen layers' output once "
                                 "per example and reuse it every epoch (one process, padding-free; "
                                 "train/frozen_cache.py)."})
    attn_implementation: str = field(
        default="auto", metadata={"help": "auto = flash_attention_2 when importable on a GPU, else sdpa_varlen "
                                  "with padding_free (per-example causal SDPA, train/attention.py), else sdpa."})


@dataclass
class DataArgs:
    train_file: str = field(default="", metadata={"help": "Cases JSONL for training."})
    eval_file: str | None = field(default=None, metadata={"help": "Cases JSONL for validation loss."})
    val_fraction: float = field(
        default=0.1, metadata={"help": "Held out from train_file when eval_file is not given (0 = none)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N train cases."})
    max_val_samples: int | None = field(default=None, metadata={"help": "Use only the first N val cases."})
    prompt_format: str = field(default="auto", metadata={"help": "auto | phi3 | generic."})
    prompt_mode: str = field(
        default="finetuned", metadata={"help": "finetuned (the study: note only) | rag (retrieval-tuned: the "
                                       "nearest training claims in every prompt) | mixed (each case in both forms: "
                                       "one adapter for `--mode finetuned` and `--mode rag`)."})
    rag_index: str | None = field(default=None, metadata={"help": "Index folder of train_file "
                                                            "(`opclaim rag build`) for rag/mixed."})
    rag_k: int = field(default=2, metadata={"help": "Example claims per rag prompt (study: 2)."})
    rag_distractor_share: float = field(
        default=0.2, metadata={"help": "Share of rag prompts whose examples are unhelpful (RAFT), so the model "
                               "reads the note instead of copying."})
    rag_distractors: str = field(
        default="other-service", metadata={"help": "other-service (claims of another service; random when the "
                                           "data has one) | random (any other training claims)."})
