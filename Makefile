# nvmefs: set up, run, test and benchmark on Debian 12 (run as root, or with sudo available).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MNT := mnt
# Debian packages: FUSE 3 and its headers (pyfuse3 builds against them), a C toolchain and
# liburing (the compiled extension), the shell tools the tests drive the mount with, and the
# QEMU guest of tests/vm with its peers (nvme-cli, fio); systemd for systemd-analyze (the unit's test).
DEBS := fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv liburing-dev jq xxd man-db \
	qemu-system-x86 busybox-static nvme-cli fio systemd
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# the Debian packages of $(1) not installed (one removed but not purged counts as missing)
missing_debs = $$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	| grep -q 'ok installed' || echo $$p; done)

.PHONY: setup run stop test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py ffi/build_nvme.py
	@missing=$(call missing_debs,$(DEBS)); \
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

# Build the sidecar image (nvmefs/deploy/Containerfile) with podman on a Debian root file
# system made by mmdebstrap, then run it beside a reader container across stops, kills and
# restarts (tests/containers: as root; fetches from Debian's mirror and PyPI; prints how
# long each step took). `make test` skips these.
CONTAINER_DEBS := podman runc mmdebstrap
.PHONY: test-containers
test-containers: setup
	@missing=$(call missing_debs,$(CONTAINER_DEBS)); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi
	$(SUDO) env NVMEFS_CONTAINER_TESTS=1 $(BIN)/python -m pytest -q tests/containers

# Install for the whole system (as root): nvmefs and its dependencies with $(PYTHON)'s pip into
# PREFIX (the command in $(PREFIX)/bin, where mount(8) and systemd look; Debian: python3-pip and
# the build packages of DEBS), the man pages, the bash completion and the systemd template unit
# (its ExecStart pointed at the installed command). DESTDIR stages everything elsewhere.
PREFIX ?= /usr/local
# Debian's python puts a `pip install --prefix=P` in P/local (its posix_local scheme): hand it
# PREFIX without that /local, so the default lands in /usr/local, on its sys.path; BINDIR is
# where the command then is.
PIP_PREFIX = $(shell $(PYTHON) -c 'import sys, sysconfig; p = sys.argv[1]; print(p.removesuffix("/local") if sysconfig.get_preferred_scheme("prefix") == "posix_local" else p)' '$(PREFIX)')
BINDIR = $(shell $(PYTHON) -c 'import sys, sysconfig; p = sys.argv[1]; print(sysconfig.get_path("scripts", sysconfig.get_preferred_scheme("prefix"), {"base": p, "platbase": p}))' '$(PIP_PREFIX)')
.PHONY: install
install:
	$(PYTHON) -m pip install --no-warn-script-location $(if $(DESTDIR),--root=$(DESTDIR)) \
		--prefix=$(PIP_PREFIX) .
	install -D -m 644 man/nvmefs.1 $(DESTDIR)$(PREFIX)/share/man/man1/nvmefs.1
	install -D -m 644 man/nvmefs.5 $(DESTDIR)$(PREFIX)/share/man/man5/nvmefs.5
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(PREFIX)/lib/systemd/system
	$(PYTHON) -m nvmefs.cli completion bash \
		> $(DESTDIR)$(PREFIX)/share/bash-completion/completions/nvmefs
	sed 's|^ExecStart=nvmefs |ExecStart=$(BINDIR)/nvmefs |' 'nvmefs/deploy/nvmefs@.service' \
		> '$(DESTDIR)$(PREFIX)/lib/systemd/system/nvmefs@.service'
	@echo "installed $(BINDIR)/nvmefs; for the unit: systemctl daemon-reload (nvmefs(1), SYSTEMD)"

clean: stop
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
