# ockam: a userspace secure tunnel in the spirit of Ockam. `make help` lists targets.
GO ?= go
BIN := bin/ockam bin/ockam-relay
export GOFLAGS ?= -buildvcs=false

.PHONY: help build demo demo-tun test test-short bench bench-go fuzz lint clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/ockam and bin/ockam-relay
	$(GO) build -o bin/ ./cmd/...

demo: build ## run the seed demo on loopback (no root needed)
	./scripts/demo.sh bin/ockam

demo-tun: build ## the demo through a TUN interface (root)
	./scripts/demo-tun.sh bin/ockam

test: build ## vet, gofmt check and every test with -race (netns tests run as root)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) test -race -p 1 -timeout 12m ./... # one package at a time: some tests compare throughputs
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...

test-short: ## unit tests only, quick
	$(GO) test -short ./...

bench: build ## side-by-side benchmarks across network namespaces (root)
	./bench/bench.sh

bench-go: ## Go microbenchmarks of the hot paths
	$(GO) test -run '^$$' -bench . -benchmem ./...

FUZZTIME ?= 20s
fuzz: ## run every fuzz target for FUZZTIME each
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

lint: ## go vet and gofmt
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))"

clean: ## remove built binaries
	rm -rf bin
