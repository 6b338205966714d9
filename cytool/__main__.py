"""`python -m cytool` is the `cytool` command."""
import sys

from cytool.cli import main

sys.exit(main())
