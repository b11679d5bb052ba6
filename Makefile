# vault-plugin-secrets-oauth
#
#   make build      build bin/vault-plugin-secrets-oauth
#   make test       make lint, then all tests, including the end-to-end tests that
#                   run a real Vault 1.21.0 and a real OAuth server (node-oidc-provider)
#   make lint       go vet + staticcheck on ./... + one default version (see DEV_VERSION)
#   make test-unit  unit tests of ./backend only
#   make fuzz       the fuzz targets (scripts/fuzz.sh)
#   make deadcode   functions unreachable from ./cmd/... (informational: never fails
#                   on findings; DEADCODE_ARGS='-test ./...' also counts tests as callers)
#   make tools      install the pinned staticcheck and deadcode into .tools/bin
#                   (scripts/install-tools.sh; lint and deadcode do it on demand)
#   make dev        local Vault dev server + upstream with the plugin mounted at oauth/
#   make vault      build/cache the Vault binary (scripts/build-vault.sh)
#   make upstream   npm ci for tests/upstream (scripts/upstream-install.sh)

SHELL := /bin/bash
.DEFAULT_GOAL := build

MODULE      := github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth
PLUGIN      := vault-plugin-secrets-oauth
VAULT_VER   := 1.21.0
VAULT_BIN   ?= $(CURDIR)/.tools/vault-$(VAULT_VER)/vault
# The version of a build without a git tag. It must equal backend.Version's
# compiled-in default (backend/backend.go) and the e2e harness's fallback
# (tests/harness/harness.go); make lint checks (scripts/check-version-default.sh).
DEV_VERSION := v0.0.0-dev
VERSION     ?= $(shell git describe --tags --dirty 2>/dev/null || echo $(DEV_VERSION))
override VERSION := $(VERSION)
LDFLAGS     := -X $(MODULE)/backend.Version=$(VERSION)
GO          ?= go
# Pinned Go tools, installed by scripts/install-tools.sh (versions live there).
TOOLS_BIN   := $(CURDIR)/.tools/bin
STATICCHECK := $(TOOLS_BIN)/staticcheck
DEADCODE    := $(TOOLS_BIN)/deadcode
DEADCODE_ARGS ?= ./cmd/...

# The e2e tests build the plugin with the same version string.
export VERSION

.PHONY: build vault upstream tools lint test test-unit fuzz deadcode dev bench fmt clean

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/$(PLUGIN) ./cmd/$(PLUGIN)

vault:
	@bash scripts/build-vault.sh >/dev/null

upstream:
	@bash scripts/upstream-install.sh

tools:
	@bash scripts/install-tools.sh >/dev/null

lint:
	@bash scripts/install-tools.sh staticcheck >/dev/null
	$(GO) vet ./...
	$(STATICCHECK) ./...
	@bash scripts/check-version-default.sh

# lint first: it takes well under a minute; the Vault build behind `vault` can take 15.
test: lint vault upstream
	VAULT_BIN="$(VAULT_BIN)" $(GO) test -count=1 -timeout 30m ./...

test-unit:
	$(GO) test -count=1 ./backend/...

fuzz:
	@bash scripts/fuzz.sh

# Reports, never fails on findings (only if the code cannot be loaded).
deadcode:
	@bash scripts/install-tools.sh deadcode >/dev/null
	@echo "deadcode $(DEADCODE_ARGS): unreachable functions" >&2
	@$(DEADCODE) $(DEADCODE_ARGS)

dev:
	@bash scripts/dev.sh

# The benchmark suite: real Vault, real upstream, every figure the median of
# 3 bounded runs; prints the table and writes BENCHMARKS.md and the chart.
bench: vault upstream
	VAULT_BIN="$(VAULT_BIN)" $(GO) test -count=1 -run '^$$' -bench '^BenchmarkSuite$$' -benchtime 1x -timeout 40m ./tests/bench

fmt:
	$(GO) fmt ./...

clean:
	rm -rf bin .dev
