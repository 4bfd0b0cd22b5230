"""The few inference functions the issue-21 tests call directly, wherever they live: after the
split of infer/generate.py (issue 15) in infer.loading / engines / render / run, before it in
infer.generate. Everything else those tests do goes through the CLI."""

try:
    from infer.loading import load
    from infer.render import build_prompts
    from infer.run import run

    from infer.engines import HFEngine, generate_batch
except ImportError:  # the layout before the split
    from infer.generate import HFEngine, build_prompts, generate_batch, load, run

__all__ = ["HFEngine", "build_prompts", "generate_batch", "load", "run"]
