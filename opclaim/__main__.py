import sys

from opclaim.cli import main

sys.exit(main())
