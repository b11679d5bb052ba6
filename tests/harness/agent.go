package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Consumers of the engine: a real `vault agent` process (the same vault
// binary), and the vault CLI run with a token other than root, as a CI job
// or a service runs it.

// AgentOptions configure StartAgent.
type AgentOptions struct {
	// Config is the agent's HCL configuration, written to a file and passed
	// as -config. It must name the Vault address itself (vault { address }).
	Config string
	// LogLevel is the agent's -log-level: trace, debug, info, warn or error.
	// Default "trace": the template engine (consul-template) logs its lease
	// renewals and re-fetches at trace level only.
	LogLevel string
	// Env: extra environment variables ("KEY=value") for the agent.
	Env []string
}

// Agent is a running `vault agent`.
type Agent struct {
	ConfigPath string
	LogPath    string // agent stdout+stderr, at AgentOptions.LogLevel
	Dir        string // the agent's HOME, holding ConfigPath and LogPath

	proc *process
}

// StartAgent writes opts.Config to a file and starts `vault agent -config=...`
// with a clean environment (no VAULT_* variables of the caller; HOME is a
// temporary directory). It does not wait for auto-auth or templates: the
// caller polls for what it expects. The agent is stopped at t's cleanup; when
// t fails, the tail of its log is printed.
func StartAgent(t testing.TB, opts AgentOptions) *Agent {
	t.Helper()
	ensureSetup(t)
	logLevel := opts.LogLevel
	if logLevel == "" {
		logLevel = "trace"
	}
	dir := t.TempDir()
	a := &Agent{
		ConfigPath: filepath.Join(dir, "agent.hcl"),
		LogPath:    filepath.Join(dir, "agent.log"),
		Dir:        dir,
	}
	if err := os.WriteFile(a.ConfigPath, []byte(opts.Config), 0o600); err != nil {
		t.Fatalf("StartAgent: %v", err)
	}
	t.Cleanup(func() { a.proc.stop(10 * time.Second) })
	dumpLogOnFailure(t, "vault agent log", a.LogPath, nil)
	env := append(cleanEnv(), "HOME="+dir)
	env = append(env, opts.Env...)
	p, err := startProcess("vault-agent", a.LogPath, env, st.vaultBin,
		"agent", "-config="+a.ConfigPath, "-log-level="+logLevel)
	if err != nil {
		t.Fatalf("StartAgent: %v", err)
	}
	a.proc = p
	return a
}

// PID is the agent's process id.
func (a *Agent) PID() int { return a.proc.cmd.Process.Pid }

// Exited reports whether the agent process has exited (for example after a
// configuration error, or with template_config exit_on_retry_failure).
func (a *Agent) Exited() bool { return a.proc.exited() }

// Stop stops the agent (SIGTERM, then SIGKILL after 10s).
func (a *Agent) Stop(t testing.TB) {
	t.Helper()
	a.proc.stop(10 * time.Second)
}

// Log returns the agent's log so far.
func (a *Agent) Log(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(a.LogPath)
	if err != nil {
		t.Fatalf("agent log: %v", err)
	}
	return string(data)
}

// CLIAs runs the real vault binary against this server with VAULT_TOKEN set
// to token ("" for none, as before a login) instead of the root token, and
// stdin as its standard input. It returns stdout; a non-nil error is a
// *CLIError carrying the exit status and stderr.
func (v *Vault) CLIAs(t testing.TB, token, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, st.vaultBin, args...)
	cmd.Env = append(cleanEnv(), "VAULT_ADDR="+v.Addr, "HOME="+v.dir)
	if token != "" {
		cmd.Env = append(cmd.Env, "VAULT_TOKEN="+token)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &CLIError{Args: args, Err: err, Stderr: stderr.String()}
	}
	return stdout.String(), nil
}

// MustCLIAs is CLIAs that fails the test on error.
func (v *Vault) MustCLIAs(t testing.TB, token, stdin string, args ...string) string {
	t.Helper()
	out, err := v.CLIAs(t, token, stdin, args...)
	if err != nil {
		t.Fatalf("%v\nstdout: %s", err, out)
	}
	return out
}

// String describes the agent for test logs.
func (a *Agent) String() string {
	return fmt.Sprintf("vault agent pid %d (config %s, log %s)", a.PID(), a.ConfigPath, a.LogPath)
}
