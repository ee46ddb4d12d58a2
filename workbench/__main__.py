"""`python -m workbench ...`: the `esacl` command line."""

import sys

from .cli import main

sys.exit(main())
