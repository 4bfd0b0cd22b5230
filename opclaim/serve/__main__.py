"""`python -m opclaim.serve ARGS` = `opclaim serve ARGS`, also before the verb is registered in
opclaim/cli.py."""

import sys

from opclaim import cli

if "opclaim.commands.serve" not in cli.COMMAND_MODULES:
    cli.COMMAND_MODULES.append("opclaim.commands.serve")
sys.exit(cli.main(["serve", *sys.argv[1:]]))
