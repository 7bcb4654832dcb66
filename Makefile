# The two set-up commands of the README:
#   make demo   install, then verify the bundled example
#   make test   install, then run the test suite
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install demo test example

install:
	# torch first and pinned, so that installing nnverify never pulls another torch build
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'

demo: install
	# `$(PYTHON) -m verifier` is the nnverify command (works without an activated venv).
	# Exit codes 0 (unsat), 1 (sat) and 2 (unknown) are all fine here; 3 (error) is not.
	$(PYTHON) -m verifier run examples/example.onnx examples/example_sat.vnnlib --timeout 30 --results-file example_sat.result.txt || [ $$? -le 2 ]
	cat example_sat.result.txt
	$(PYTHON) -m verifier run examples/example.onnx examples/example_unsat.vnnlib --timeout 30 || [ $$? -le 2 ]

test: install
	# pytest exits 5 when it collected no test: for this project that is a failure
	$(PYTHON) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$rc

example:
	$(PYTHON) examples/make_example.py
