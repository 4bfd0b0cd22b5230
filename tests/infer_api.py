"""The few inference functions the issue-21 tests call directly, under one name (`generate`), from
the infer modules that own them. Everything else those tests do goes through the CLI."""

from infer.engines import HFEngine, generate_batch
from infer.loading import load
from infer.render import build_prompts
from infer.run import run

__all__ = ["HFEngine", "build_prompts", "generate_batch", "load", "run"]
