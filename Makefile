# vault-plugin-secrets-oauth
#
#   make build      build bin/vault-plugin-secrets-oauth
#   make test       go vet + all tests, including the end-to-end tests that run
#                   a real Vault 1.21.0 and a real OAuth server (node-oidc-provider)
#   make test-unit  unit tests of ./backend only
#   make dev        local Vault dev server + upstream with the plugin mounted at oauth/
#   make vault      build/cache the Vault binary (scripts/build-vault.sh)
#   make upstream   npm ci for tests/upstream (scripts/upstream-install.sh)

SHELL := /bin/bash
.DEFAULT_GOAL := build

MODULE      := github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth
PLUGIN      := vault-plugin-secrets-oauth
VAULT_VER   := 1.21.0
VAULT_BIN   ?= $(CURDIR)/.tools/vault-$(VAULT_VER)/vault
VERSION     ?= $(shell git describe --tags --dirty 2>/dev/null || echo v0.1.0-dev)
override VERSION := $(VERSION)
LDFLAGS     := -X $(MODULE)/backend.Version=$(VERSION)
GO          ?= go

# The e2e tests build the plugin with the same version string.
export VERSION

.PHONY: build vault upstream test test-unit dev bench fmt clean

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/$(PLUGIN) ./cmd/$(PLUGIN)

vault:
	@bash scripts/build-vault.sh >/dev/null

upstream:
	@bash scripts/upstream-install.sh

test: vault upstream
	$(GO) vet ./...
	VAULT_BIN="$(VAULT_BIN)" $(GO) test -count=1 -timeout 30m ./...

test-unit:
	$(GO) test -count=1 ./backend/...

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
