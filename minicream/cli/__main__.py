"""`python -m minicream.cli ARGS`."""
import sys

from . import main

sys.exit(main())
