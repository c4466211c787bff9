# atrest — `make help` lists the targets.
#
# `make test` is the one command CI runs (.ci/run): Debian packages, lint, then
# every test tier in strict mode, where a tier that cannot run fails instead of
# skipping.

GO          ?= go
PREFIX      ?= /usr/local
DESTDIR     ?=
UNITDIR     ?= $(PREFIX)/lib/systemd/system
ZSHDIR      ?= $(PREFIX)/share/zsh/site-functions
# Where build puts atrest and atrestd (and install takes them from).
BINDIR      ?= bin
# Where `make deb` puts the package.
DEBDIR      ?= $(CURDIR)/bin
VERSION     := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X github.com/atrest/atrest/internal/version.Version=$(VERSION)
# urfave_cli_no_docs leaves urfave/cli's Markdown/roff generators out, and
# with them go-md2man and blackfriday, whose initialisation every run of
# atrest would pay (atrest writes its manual page itself: internal/cli/man.go).
GOTAGS      := urfave_cli_no_docs
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# The real Vault server the KMS tests start (integration/vaultserver, its own
# Go module). Built once here; tests run without make build it themselves.
VAULTSERVER := $(CURDIR)/bin/vaultserver
export ATREST_VAULTSERVER := $(VAULTSERVER)

.PHONY: help build deps test test-unit integration vm boot fuzz bench lint demo install deb clean vaultserver

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-z-]+:.*## /{printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build atrest and atrestd in $(BINDIR)
	CGO_ENABLED=0 $(GO) build -trimpath -tags '$(GOTAGS)' -ldflags '$(LDFLAGS)' -o $(BINDIR)/ ./cmd/...

deps: ## install the Debian packages the test tiers need (root)
	./scripts/deps.sh

test: deps lint vaultserver ## every tier, strict (needs root; what CI runs)
	ATREST_TEST_STRICT=1 $(GO) test -count=1 -timeout 60m ./...
	$(MAKE) fuzz

test-unit: ## unit tier only: no root, no VM, no Vault
	$(GO) test -short -count=1 ./...

integration: ## root tiers, the real-kernel VM tier and the booted-Debian tier, strict
	ATREST_TEST_STRICT=1 $(GO) test -count=1 -timeout 60m ./integration/...

vm: ## the real-kernel VM tier only; ATREST_VM_RUN=pattern narrows the guest tests
	ATREST_TEST_STRICT=1 $(GO) test -count=1 -timeout 20m -v -run . ./integration/vm

boot: ## the booted-Debian tier only (integration/boot), verbose
	ATREST_TEST_STRICT=1 $(GO) test -count=1 -timeout 30m -v ./integration/boot/...

fuzz: ## bounded fuzzing of every Fuzz target (a count of executions each; FUZZSCALE=N for N times more)
	./scripts/fuzz.sh

bench: deps vaultserver ## benchmarks, with the cryptsetup, clevis and openssl comparisons and issue 12's ratios in one run
	$(GO) test -run '^$$' -bench . -skip 'BenchmarkUnlockProcess|BenchmarkRewrapAll|BenchmarkRewrap$$|BenchmarkUnlock$$' -benchmem -count 5 ./...
	./scripts/bench-luks2.sh
	./scripts/bench-reencrypt.sh
	./scripts/bench-encrypt.sh
	ATREST_VM_RUN=TestOnlineThroughputBesideCryptsetup $(GO) test -count=1 -timeout 25m -v -run 'TestRealKernelReencrypt$$' ./integration/cli/
	./scripts/bench-unlock.sh
	BENCH_1000=1 ATREST_VAULTSERVER=$(VAULTSERVER) ./scripts/bench-all.sh
	ATREST_STORM_NODES=1000 ATREST_STORM_ROUNDS=2 $(GO) test -count=1 -timeout 30m -v -run '^TestStorm$$' ./integration/storm

lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	cd integration/vaultserver && CGO_ENABLED=0 $(GO) vet . && CGO_ENABLED=0 $(GO) run $(STATICCHECK) .

# Same flags as the vet above (CGO_ENABLED=0, no -trimpath), so the build
# reuses its compiled packages and only links.
vaultserver: ## build bin/vaultserver, the test Vault (cold: ~1 min download + ~8 min compile)
	cd integration/vaultserver && CGO_ENABLED=0 $(GO) build -o $(VAULTSERVER) .

demo: build ## the main job on the embedded default (local keystore, a loop device); needs root
	./scripts/demo.sh

install: build ## install atrest, atrestd, the units, man pages and completions under $(DESTDIR)$(PREFIX)
	install -D -m 0755 $(BINDIR)/atrest $(DESTDIR)$(PREFIX)/sbin/atrest
	install -D -m 0755 $(BINDIR)/atrestd $(DESTDIR)$(PREFIX)/sbin/atrestd
	install -d -m 0755 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(PREFIX)/share/man/man8 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(ZSHDIR) $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	for u in atrestd.service atrest-early.service; do \
		sed 's|/usr/local/sbin/atrestd|$(PREFIX)/sbin/atrestd|' systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	$(BINDIR)/atrest man > $(DESTDIR)$(PREFIX)/share/man/man8/atrest.8
	install -m 0644 systemd/atrestd.8 $(DESTDIR)$(PREFIX)/share/man/man8/atrestd.8
	$(BINDIR)/atrest completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/atrest
	$(BINDIR)/atrest completion zsh > $(DESTDIR)$(ZSHDIR)/_atrest
	$(BINDIR)/atrest completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/atrest.fish
	install -d -m 0700 $(DESTDIR)/etc/atrest

deb: ## the Debian package (bookworm; DEB_ARCH=arm64 cross-builds) in $(DEBDIR), with dpkg-deb (packaging/deb)
	./packaging/deb/build.sh $(DEBDIR)

clean: ## remove build output
	rm -rf bin
