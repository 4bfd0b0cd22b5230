"""opclaim: fine-tune small open LLMs to turn operative notes into billing claims.

Importing this package makes every Hugging Face library offline and silent before
any of them is imported: patient text must never leave the machine.
"""

import os

# Set before transformers / huggingface_hub / datasets are imported anywhere.
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "DISABLE_TELEMETRY": "1",
    "WANDB_DISABLED": "true",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}.items():
    os.environ.setdefault(_key, _value)
os.environ["HF_HUB_OFFLINE"] = "1"

__version__ = "0.1.0"

# bitsandbytes tries to fetch an optional CPU kernel from a model hub at import and warns when it
# cannot; offline that is expected, so the warning is noise in every command's output.
import logging as _logging  # noqa: E402

_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
