"""SFTTrainer that allows LoRA on lm_head, as the study does.

TRL 1.x computes the loss from `lm_head.weight` directly (a fused, chunked LM head) and therefore
refuses an adapter on lm_head: it would be bypassed. When lm_head is adapted we take the ordinary
path instead - the model's own forward builds the logits (through the adapter) and its loss, as
in transformers.Trainer - and hide the adapted head from TRL's constructor check only while it runs.
Same loss (mean NLL over unmasked claim tokens); it costs the full logits in memory.
"""

from __future__ import annotations

import transformers
from peft import get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from trl import SFTTrainer


class ClaimSFTTrainer(SFTTrainer):
    def __init__(self, model, *args, peft_config=None, **kwargs):
        self.lm_head_adapted = bool(peft_config is not None and "lm_head" in (peft_config.target_modules or ()))
        if not self.lm_head_adapted:
            super().__init__(model, *args, peft_config=peft_config, **kwargs)
            return
        peft_model = get_peft_model(model, peft_config)
        head = peft_model.get_output_embeddings()
        assert isinstance(head, BaseTunerLayer)
        peft_model.get_output_embeddings = lambda: head.get_base_layer()  # seen only by TRL's check
        try:
            super().__init__(peft_model, *args, **kwargs)
        finally:
            del peft_model.get_output_embeddings

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.lm_head_adapted:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs["use_cache"] = False
        return transformers.Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                                 num_items_in_batch=num_items_in_batch)
