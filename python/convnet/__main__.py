"""`python -m convnet ...` is the `convnet` command."""
import sys

from .cli import main

sys.exit(main())
