"""`python -m cnnzoo` is the same as the `cnnzoo` command."""

import sys

from cnnzoo.cli.main import main

sys.exit(main())
