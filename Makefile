# nvmefs: set up, run, test and benchmark on Debian 12 (run as root, or with sudo available).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MNT := mnt
# Debian packages: FUSE 3 and its headers (pyfuse3 builds against them), a C toolchain and
# liburing (the compiled extension), the shell tools the tests drive the mount with, and the
# QEMU guest of tests/vm with its peers (nvme-cli, fio).
DEBS := fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv liburing-dev jq xxd man-db \
	qemu-system-x86 busybox-static nvme-cli fio
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup run stop test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py ffi/build_nvme.py
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@# the guest's kernel and initramfs, cached in .cache/vm (apt-get download needs fresh lists)
	$(BIN)/python -m tests.vm.assets || { $(SUDO) apt-get update -q && $(BIN)/python -m tests.vm.assets; }
	touch $@

run: setup stop
	mkdir -p $(MNT)
	$(BIN)/nvmefs mount $(MNT) sim
	@echo "== ls $(MNT)/nvme0 $(MNT)/nvme0/log"
	@ls $(MNT)/nvme0 $(MNT)/nvme0/log
	@echo "== jq -r .mn $(MNT)/nvme0/identify.json"
	@jq -r .mn $(MNT)/nvme0/identify.json
	@echo "== xxd $(MNT)/nvme0/identify | head -4"
	@xxd $(MNT)/nvme0/identify | head -4
	@echo "== jq .temperature $(MNT)/nvme0/log/smart.json   (kelvin)"
	@jq .temperature $(MNT)/nvme0/log/smart.json
	@echo "== head -3 $(MNT)/nvme0/log/smart.txt"
	@head -3 $(MNT)/nvme0/log/smart.txt
	@echo
	@echo "The simulated controller stays mounted at ./$(MNT). Unmount with: make stop"
	@echo "(or: $(BIN)/nvmefs umount $(MNT))"

stop:
	@if grep -qs " $(abspath $(MNT)) " /proc/self/mountinfo; then $(BIN)/nvmefs umount $(MNT); fi

test: setup
	$(BIN)/python -m pytest -q

bench: setup build/floor/nothing
	$(BIN)/python bench/run.py

# the C peer of bench/floor.py: a do-nothing libfuse3 file system
build/floor/nothing: bench/floor/nothing.c
	mkdir -p $(@D)
	gcc -O2 -Wall -Wextra -o $@ $< $$(pkg-config --cflags --libs fuse3)

# Fuzz passthru/admin and passthru/io through real mounts, one per policy (readonly, all,
# off): FUZZ_COUNT random and mutated requests per policy, FUZZ_SEED to repeat a run
# (tests/fuzz/mailbox.py). `make test` runs it only small (tests/mount/test_fuzz_smoke.py).
FUZZ_COUNT ?= 105000
.PHONY: fuzz
fuzz: setup
	FUZZ_COUNT=$(FUZZ_COUNT) $(if $(FUZZ_SEED),FUZZ_SEED=$(FUZZ_SEED)) $(BIN)/python -m tests.fuzz.mailbox

clean: stop
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
