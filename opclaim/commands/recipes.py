"""`opclaim recipes list|copy`: the recipes, ds_configs and demo.yaml installed with opclaim
(opclaim/shipped.py)."""

from opclaim.cli import verb


def register(subs):
    p = subs.add_parser("recipes", help="the training recipes, ds_configs and demo.yaml shipped with opclaim")
    rs = p.add_subparsers(dest="recipes_verb", metavar="VERB", required=True)
    verb(rs, "list", "list the shipped files by repository path (where each is read from)",
         "opclaim recipes list", _list)
    cp = verb(rs, "copy", "copy them into a folder under their repository paths "
              "(then `accelerate launch --config_file ds_configs/...` runs from there)",
              "opclaim recipes copy --out .\nopclaim recipes copy --out site-recipes --force", _copy)
    cp.add_argument("--out", required=True, help="folder to copy into (train/recipes/, ds_configs/, demo.yaml)")
    cp.add_argument("--force", action="store_true", help="overwrite files that differ from the shipped copy")


def _list(args):
    from opclaim import shipped

    for rel in shipped.files():
        print(f"{rel}\t{shipped.resolve(rel)}")


def _copy(args):
    from opclaim import shipped

    written = shipped.copy_to(args.out, force=args.force)
    print(f"copied {len(written)} of {len(shipped.files())} files into {args.out} (the others were already there)")
