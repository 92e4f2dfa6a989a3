"""`python -m physrec`: the command line, for environments where only the source is on the path."""

import sys

from physrec.cli import main

sys.exit(main())
