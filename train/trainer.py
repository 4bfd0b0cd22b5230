"""SFTTrainer that allows LoRA on lm_head, as the study does, and padding-free batches with max_length.

TRL 1.x computes the loss from `lm_head.weight` directly (a fused, chunked LM head) and therefore
refuses an adapter on lm_head: it would be bypassed. When lm_head is adapted we take the ordinary
path instead - the model's own forward builds the logits (through the adapter) and its loss, as
in transformers.Trainer - and hide the adapted head from TRL's constructor check only while it runs.
Same loss (mean NLL over unmasked claim tokens). The head runs only at the positions that predict a
claim token (`logits_to_keep` as a mask): prompt positions carry no loss, and skipping their
49k-wide logits took a CPU step of 2 terse notes on SmolLM2 from 4.08 to 3.19 s.

Padding-free without packing (`padding_free: true`): TRL refuses a `max_length` there because its
collator would not enforce it. We keep the recipe's `max_length` meaning the same as for padded
batches: examples are truncated to it when the dataset is prepared (TRL's own rule and
`truncation_mode`), then each step's examples are concatenated into one row with no padding.
"""

from __future__ import annotations

import torch
import transformers
from peft import get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from trl import SFTTrainer


class ClaimSFTTrainer(SFTTrainer):
    def __init__(self, model, *args, peft_config=None, **kwargs):
        self.lm_head_adapted = bool(peft_config is not None and "lm_head" in (peft_config.target_modules or ()))
        sft_args = kwargs.get("args", args[0] if args else None)
        self._truncate_to = None
        if (sft_args is not None and sft_args.padding_free and not sft_args.packing
                and sft_args.max_length is not None):
            self._truncate_to, sft_args.max_length = sft_args.max_length, None
        try:
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
        finally:
            if self._truncate_to is not None:
                sft_args.max_length = self._truncate_to

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        dataset = super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        limit = self._truncate_to
        if limit is None or packing or not hasattr(dataset, "column_names") or \
                max(len(x) for x in dataset["input_ids"]) <= limit:
            return dataset
        sl = slice(-limit, None) if args.truncation_mode == "keep_end" else slice(None, limit)
        dataset = dataset.map(lambda ex: {"input_ids": ex["input_ids"][sl], "labels": ex["labels"][sl]},
                              desc=f"Truncating {dataset_name} dataset")
        # As TRL does: an example left with no claim token contributes no loss.
        return dataset.filter(lambda ex: any(t != -100 for t in ex["labels"]))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.lm_head_adapted:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs["use_cache"] = False
        labels = inputs.get("labels")
        if labels is not None and "logits_to_keep" not in inputs:
            shift = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
            keep = shift != -100
            # The model's loss function takes the already-shifted targets of the kept positions.
            inputs = {**inputs, "logits_to_keep": keep, "shift_labels": shift[keep]}
        return transformers.Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                                 num_items_in_batch=num_items_in_batch)
