package main

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// parentPollInterval bounds how long the plugin outlives its Vault.
const parentPollInterval = 200 * time.Millisecond

// watchParent makes the plugin exit once the Vault process that started it is
// gone. Vault stops its plugins when it shuts down, but when it is killed
// (SIGKILL, the OOM killer) nothing tells the plugin, which would live on,
// reparented, holding the mount's keyring and provider secrets in memory.
//
// An orphan is reparented to init or the nearest subreaper, so its parent pid
// changes. It is compared with the pid recorded here rather than with 1
// because Vault may itself be PID 1 (in a container). On Windows the parent
// pid never changes and this does nothing.
//
// PR_SET_PDEATHSIG is deliberately not used: it fires when the thread that
// forked the plugin exits, and in a Go program such as Vault that can be any
// OS thread of a process that is still running.
func watchParent() {
	ppid := os.Getppid()
	// Created now: go-plugin later points os.Stderr at its own pipe, while
	// Vault reads the original stderr.
	logger := hclog.New(&hclog.LoggerOptions{Output: os.Stderr, JSONFormat: true})
	go func() {
		for range time.Tick(parentPollInterval) {
			if now := os.Getppid(); now != ppid {
				// With Vault gone our stderr is a broken pipe: ignore SIGPIPE
				// so that the log line fails quietly and we exit with 1.
				signal.Ignore(syscall.SIGPIPE)
				logger.Error("Vault process is gone, exiting", "vault_pid", ppid, "parent_pid", now)
				os.Exit(1)
			}
		}
	}()
}
