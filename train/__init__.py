"""QLoRA fine-tuning of a causal LM on op-note -> claim pairs (TRL SFTTrainer + PEFT + bitsandbytes).

Modules: config (argument dataclasses), data (cases -> prompt/completion), model (4-bit load +
LoRA), checkpoint (completion markers, safe resume, signal-driven save), run (the training
entry), memory + cli (`opclaim plan-memory`). Launch with `accelerate launch ... -m train`.
"""
