# Two commands do everything on a fresh machine:  make demo  and  make test.
PY        := .venv/bin/python
PIP       := .venv/bin/pip
STAMP     := .venv/.installed
DATA_DIR  ?= $(or $(FASHION_MNIST_DIR),/usr/share/datasets/fashion-mnist)

.PHONY: setup data demo test test-thorough bench lint profile mobilenet train evaluate clean

setup: $(STAMP) data

# torch comes first, from the local CPU wheel; otherwise a dependency would pull a CUDA build.
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	@touch $(STAMP)

# The real Fashion-MNIST files come from Debian's package. Set FASHION_MNIST_DIR
# (or DATA_DIR=...) to a folder holding the four IDX .gz files where apt is not usable.
data:
	@if [ -f "$(DATA_DIR)/t10k-images-idx3-ubyte.gz" ]; then :; \
	elif [ "$(DATA_DIR)" = "/usr/share/datasets/fashion-mnist" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's dataset-fashion-mnist ..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
		echo "Fashion-MNIST not found in $(DATA_DIR)."; \
		echo "Install Debian's dataset-fashion-mnist (as root: apt-get install dataset-fashion-mnist)"; \
		echo "or set FASHION_MNIST_DIR to a folder with the four *-ubyte.gz files."; exit 1; \
	fi

demo: setup
	$(PY) train.py --name demo --timesteps 60000 --overwrite
	$(PY) evaluate.py --policy runs/demo --compare-run runs/default --episodes 8 --out out/demo

# Two workers: much of the suite waits on servers, sockets and emulated devices. The
# Ray tests share one worker (xdist_group), so one local Ray runs at a time. The tests
# that assert wall-clock deadlines (marker realtime) run afterwards on their own: a
# second worker training or starting Ray beside them would decide their timing.
# The 15 slowest tests of both sessions are printed at the end (tests/slowest.py).
test: setup
	$(PY) -m ruff check .
	@rm -f .pytest_cache/durations.jsonl && mkdir -p .pytest_cache
	SPLITCTL_DURATIONS=$(CURDIR)/.pytest_cache/durations.jsonl \
		$(PY) -m pytest -q -n 2 --dist loadgroup -m "not realtime"
	SPLITCTL_DURATIONS=$(CURDIR)/.pytest_cache/durations.jsonl $(PY) -m pytest -q -m realtime
	@$(PY) tests/slowest.py .pytest_cache/durations.jsonl 15

# The same suite with the property tests' full example counts (tests/conftest.py).
test-thorough: setup
	SPLITCTL_THOROUGH=1 $(MAKE) --no-print-directory test

bench: setup
	$(PY) -m bench.run_all

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

# Reproduce the shipped artefacts (seeded): weights, then the profile.
train-model: setup
	$(PY) -m profiles.train_model
profile: setup
	$(PY) -m profiles.profile
# The worked example of bringing your own model (README): its weights, then its profile.
mobilenet: setup
	$(PY) -m profiles.zoo.mobilenet
	$(PY) -m profiles.profile --model profiles.zoo.mobilenet:build --data profiles.dataset:load \
		--out profiles/data/profile_mobilenet_fmnist.npz

clean:
	rm -rf out .pytest_cache .ruff_cache
