# banger — build, install, demo and test.
#
#   sudo make demo   a real VM runs a real command (installs what it needs)
#   sudo make test   every test: unit, root integration, live VM, fuzz, verify.sh
#
# In a root shell (with or without sudo installed) the same targets run as
# `make demo` / `make test`: nothing here calls sudo itself.
#
# Both install their host packages and Go modules themselves.

SHELL := /bin/bash
export PATH := /usr/local/go/bin:/usr/sbin:/sbin:$(PATH)
export GOFLAGS ?= -mod=mod

PREFIX   ?= /usr/local
BIN      := bin
DEB_DIR  ?= dist
VERSION  := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X banger/internal/buildinfo.Version=$(VERSION)
GO       ?= go

# Host packages banger needs at run time, and those only its tests need
# (btrfs for the disk conformance suite, chromium for the web UI tests, lintian
# for the package test, curl for the host-files attack test, nodejs/npm for the
# MCP TypeScript client test).
APT_PACKAGES      := qemu-system-x86 qemu-utils debootstrap e2fsprogs nftables xfsprogs \
                     iproute2 openssh-client util-linux kmod ca-certificates \
                     bubblewrap debian-archive-keyring
APT_TEST_PACKAGES := btrfs-progs chromium lintian curl nodejs

.PHONY: all need-root build deps test-deps install uninstall deb test-package demo test test-unit test-integration test-live \
        fuzz verify bench bench-create test-image clean

all: build

## need-root: the targets that make bridges, taps, loop devices or VMs (or
## install packages) say at once when they are not run as root.
need-root:
	@[ "$$(id -u)" -eq 0 ] || { echo "make $(or $(MAKECMDGOALS),all) needs root (packages, bridges, taps, loop devices, VMs): run sudo make $(or $(MAKECMDGOALS),all), or make $(or $(MAKECMDGOALS),all) in a root shell" >&2; exit 1; }

## deps: install the host packages (apt) and download Go modules.
deps: need-root
	@scripts/deps.sh $(APT_PACKAGES)

## test-deps: deps plus what only the tests need.
test-deps: need-root
	@scripts/deps.sh $(APT_PACKAGES) $(APT_TEST_PACKAGES)
	@# npm for the MCP client test: Debian's nodejs needs the npm package,
	@# NodeSource's bundles npm and conflicts with it.
	@command -v npm >/dev/null || scripts/deps.sh npm

## build: bin/banger, bin/bangerd and the static guest agent bin/banger-agent.
build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/banger ./cmd/banger
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/bangerd ./cmd/bangerd
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/banger-agent ./cmd/banger-agent

## install: binaries to $(PREFIX)/bin, the systemd unit (its ExecStart is
## $(PREFIX)/bin/bangerd; KillMode=process, so stopping it leaves VMs running)
## and the sample config as /etc/banger/config.toml unless that exists.
## DESTDIR stages it all under another root (then systemd is not reloaded).
install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/banger $(DESTDIR)/etc/systemd/system
	install -m 0755 $(BIN)/banger $(BIN)/bangerd $(BIN)/banger-agent $(DESTDIR)$(PREFIX)/bin/
	sed 's#@PREFIX@#$(PREFIX)#g' dist/bangerd.service > $(DESTDIR)/etc/systemd/system/bangerd.service
	chmod 0644 $(DESTDIR)/etc/systemd/system/bangerd.service
	test -e $(DESTDIR)/etc/banger/config.toml || install -m 0644 config/config.sample.toml $(DESTDIR)/etc/banger/config.toml
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

## uninstall: what install put there, except /etc/banger/config.toml (yours now)
## and the state dir. Stop bangerd first; running VMs are not stopped.
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/banger $(DESTDIR)$(PREFIX)/bin/bangerd $(DESTDIR)$(PREFIX)/bin/banger-agent
	rm -f $(DESTDIR)/etc/systemd/system/bangerd.service
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

## deb: $(DEB_DIR)/banger_<version>_amd64.deb (nfpm; dist/nfpm.yaml, dist/deb.sh).
deb: build
	@BIN='$(BIN)' DEB_DIR='$(DEB_DIR)' APT_PACKAGES='$(APT_PACKAGES)' GO='$(GO)' dist/deb.sh

## test-package: make install into a temp root, and the .deb built, inspected,
## installed into a throwaway dpkg root and purged (dist/dist_test.go).
test-package:
	$(GO) test -count=1 -timeout 5m -v ./dist/

## demo: make the default image if missing, then run a command in a fresh VM.
demo: need-root deps build
	@scripts/demo.sh

## test: every test (needs root): vet, unit + integration, live VMs, fuzz, verify.sh.
test: need-root test-deps build test-image
	$(GO) vet ./...
	$(MAKE) --no-print-directory test-integration
	$(MAKE) --no-print-directory test-live
	$(MAKE) --no-print-directory fuzz
	$(MAKE) --no-print-directory verify

## test-unit: fast tests that need no root.
test-unit:
	$(GO) test -short -count=1 ./...

## test-integration: every package's tests, including root integration tests
## (loop devices, XFS/btrfs pools, taps/bridges/nft in network namespaces).
test-integration:
	$(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v /test/live)

## test-image: build (or reuse) the cached test image and its opencode variant, keyed by their recipes.
test-image: build
	$(GO) run ./internal/testimage/cmd/build-test-image -opencode

## test-live: real QEMU guests through the real daemon and CLI.
test-live: need-root build test-image
	$(GO) test -count=1 -timeout 50m -parallel 2 -v ./test/live/

## fuzz: a short run of every fuzz target.
fuzz:
	@scripts/fuzz.sh 10s

## verify: the live smoke harness with a leak audit.
verify: need-root build test-image
	scripts/verify.sh

## bench: Go benchmarks (disk clones, tap pool, create overhead).
bench:
	$(GO) test -run '^$$' -bench . -benchtime 5x ./internal/...

## bench-create: N creates with per-stage timings; ARGS="--runs N [--json]"; cold vs fork vs warm
## side by side: ARGS="--runs N --mode cold,fork,warm [--density N]" (see scripts/bench-create).
bench-create: build test-image
	$(GO) run ./scripts/bench-create $(ARGS)

clean:
	rm -rf $(BIN)
