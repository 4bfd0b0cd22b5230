"""`python -m opclaim.serve ARGS` = `opclaim serve ARGS`."""

import sys

from opclaim import cli

sys.exit(cli.main(["serve", *sys.argv[1:]]))
