"""`opclaim bundle keygen|create|verify` and `opclaim card`: signed bundles and model cards."""

from opclaim.cli import verb


def register(subs):
    p = subs.add_parser("bundle", help="signed offline model bundles (keygen, create, verify)")
    bs = p.add_subparsers(dest="bundle_verb", metavar="VERB", required=True)
    kg = verb(bs, "keygen", "make an EC P-256 signing key pair (private key written 0600)",
              "opclaim bundle keygen --out keys/", _keygen)
    kg.add_argument("--out", required=True, help="folder for opclaim_signing.key and opclaim_signing.pub")

    cr = verb(bs, "create", "copy what a model needs into a signed bundle (safetensors only)", """
opclaim bundle create models/tiny-phi3 --key keys/opclaim_signing.key --out bundles/tiny
opclaim bundle create models/phi3-mini --adapter runs/phi3-qlora --key keys/opclaim_signing.key --out bundles/phi3""",
              _create)
    cr.add_argument("model_dir", metavar="MODEL_DIR", help="model folder (config.json + *.safetensors)")
    cr.add_argument("--adapter", help="LoRA adapter folder to carry alongside (optional)")
    cr.add_argument("--key", required=True, help="private key from `opclaim bundle keygen`")
    cr.add_argument("--out", required=True, help="new bundle folder (must not exist)")

    ve = verb(bs, "verify", "refuse a bundle with any changed, missing or extra file or a bad signature",
              "opclaim bundle verify bundles/tiny --key keys/opclaim_signing.pub", _verify)
    ve.add_argument("bundle", metavar="BUNDLE")
    ve.add_argument("--key", required=True, help="public key (opclaim_signing.pub)")

    card = verb(subs, "card", "write a model card (README.md) from opclaim_run.json and metrics.json", """
opclaim card --model runs/tiny-qlora
opclaim card --model runs/tiny-qlora --metrics runs/eval/metrics.json""", _card)
    card.add_argument("--model", required=True, help="trained model/adapter folder with opclaim_run.json")
    card.add_argument("--metrics", help="metrics.json of the evaluation (default: newest under --model)")


def _keygen(args):
    from opclaim import bundle

    priv, pub = bundle.keygen(args.out)
    print(f"wrote {priv} (keep secret) and {pub} (carry into the enclave)")


def _create(args):
    from opclaim import bundle

    out = bundle.create(args.model_dir, args.key, args.out, adapter=args.adapter)
    print(f"wrote signed bundle {out}")


def _verify(args):
    from opclaim import bundle

    manifest = bundle.verify(args.bundle, args.key)
    print(f"verified {args.bundle}: {len(manifest['files'])} files, signature OK")


def _card(args):
    from opclaim.modelcard import write_model_card

    print(f"wrote {write_model_card(args.model, args.metrics)}")
