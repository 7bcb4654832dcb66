"""``python -m verifier`` is the ``nnverify`` command."""
import sys

from verifier.cli import main

sys.exit(main())
