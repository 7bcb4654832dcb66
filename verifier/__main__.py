"""``python -m verifier`` is the ``nnverify`` command.

The process ends with ``os._exit`` once ``main`` has returned (its result
files written and closed): interpreter teardown after torch was imported
costs ~0.7 s on the 2-core dev machine (measured: ``import torch`` then a
normal exit 2.60 s, then ``os._exit`` 1.88 s) and does nothing we need.
"""
import os
import sys

from verifier.cli import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code if isinstance(code, int) else 0)
