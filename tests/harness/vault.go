package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// A running `vault server -dev` with the plugin.

// VaultOptions configure StartVaultWith. The zero value is what StartVault uses.
type VaultOptions struct {
	// ExtraArgs are appended to `vault server -dev ...`.
	ExtraArgs []string
	// Env: extra environment variables ("KEY=value") for the server.
	Env []string
	// NoAudit skips enabling the file audit device (AuditLogPath is then
	// never created). Benchmarks use it: the audit device serializes and
	// HMACs every request and response.
	NoAudit bool
	// LogLevel is the server's -log-level: trace, debug, info, warn or error.
	// Default "trace" (the e2e tests want every gRPC call in the log).
	LogLevel string
	// NoMount skips registering and mounting the plugin at oauth/.
	NoMount bool
}

// Vault is a running `vault server -dev` with the plugin mounted at oauth/.
type Vault struct {
	Addr         string // http://127.0.0.1:PORT
	Token        string // root token (random)
	Port         int
	Client       *api.Client // root token; no retries (each request reaches Vault once)
	Cmd          *exec.Cmd
	LogPath      string // server stdout+stderr, at VaultOptions.LogLevel (default trace)
	AuditLogPath string // file audit device, log_raw=false (values HMAC'd); absent with NoAudit
	PluginDir    string
	PluginSHA256 string
	Mount        string // "oauth" (not mounted with NoMount)

	proc *process
	dir  string
}

// StartVault starts a dev-mode Vault (-log-level=trace) with a file audit
// device and the plugin registered (with its sha256, as users do) and
// mounted at oauth/. It is stopped at t's cleanup. It runs Setup if that has
// not been done, failing t if Setup fails.
func StartVault(t testing.TB) *Vault {
	t.Helper()
	return StartVaultWith(t, VaultOptions{})
}

// StartVaultWith is StartVault with options.
func StartVaultWith(t testing.TB, opts VaultOptions) *Vault {
	t.Helper()
	ensureSetup(t)
	logLevel := opts.LogLevel
	if logLevel == "" {
		logLevel = "trace"
	}
	dir := t.TempDir()
	port := freePortPair(t)
	v := &Vault{
		Addr:         fmt.Sprintf("http://127.0.0.1:%d", port),
		Token:        "root-" + RandomHex(t, 12),
		Port:         port,
		LogPath:      filepath.Join(dir, "vault.log"),
		AuditLogPath: filepath.Join(dir, "audit.log"),
		PluginDir:    st.pluginDir,
		PluginSHA256: st.pluginSHA256,
		Mount:        "oauth",
		dir:          dir,
	}
	t.Cleanup(func() { v.proc.stop(15 * time.Second) })
	dumpLogOnFailure(t, "vault server log", v.LogPath, vaultLogFilter)

	args := []string{"server", "-dev",
		"-dev-root-token-id=" + v.Token,
		"-dev-listen-address=127.0.0.1:" + strconv.Itoa(port),
		"-dev-plugin-dir=" + st.pluginDir,
		"-dev-no-store-token", // never touch ~/.vault-token
		"-log-level=" + logLevel,
	}
	args = append(args, opts.ExtraArgs...)
	env := append(cleanEnv(), "HOME="+dir) // vault -dev must not read or write the real ~
	env = append(env, opts.Env...)
	p, err := startProcess("vault", v.LogPath, env, st.vaultBin, args...)
	if err != nil {
		t.Fatalf("StartVault: %v", err)
	}
	v.proc, v.Cmd = p, p.cmd

	cfg := api.DefaultConfig()
	cfg.Address = v.Addr
	cfg.MaxRetries = 0 // a retried request would hit the plugin (and upstream) twice
	cfg.Timeout = 60 * time.Second
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatalf("StartVault: api client: %v", err)
	}
	client.SetToken(v.Token)
	client.ClearNamespace()
	v.Client = client

	// Wait until the server is unsealed and active.
	hc := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := hc.Get(v.Addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if p.exited() {
			t.Fatalf("StartVault: vault exited during startup (%v); see the vault log below", p.waitErr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("StartVault: %s/v1/sys/health not OK within 60s (last error %v)", v.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if !opts.NoAudit {
		// File audit device with the default log_raw=false: Vault HMACs every
		// string in requests and responses, so a secret showing up verbatim
		// in the audit log means it was put somewhere Vault does not HMAC
		// (error messages, warnings, headers, ...). AssertNoSecretsInLogs
		// checks for exactly that.
		dumpLogOnFailure(t, "vault audit log (summarized: time type operation path error)", v.AuditLogPath, auditSummary)
		v.MustCLI(t, "audit", "enable", "file", "file_path="+v.AuditLogPath, "log_raw=false")
	}
	if !opts.NoMount {
		// -dev-plugin-dir already auto-registered the binary; register again
		// with its sha256 exactly as an operator would.
		v.MustCLI(t, "plugin", "register", "-sha256="+st.pluginSHA256, "secret", PluginName)
		v.MustCLI(t, "secrets", "enable", "-path="+v.Mount, PluginName)
	}
	return v
}

// CLI runs the real vault binary against this server with VAULT_ADDR and
// VAULT_TOKEN set, and returns its stdout. A non-nil error carries the exit
// status and stderr.
func (v *Vault) CLI(t testing.TB, args ...string) (string, error) {
	t.Helper()
	return v.CLIWithStdin(t, "", args...)
}

// CLIWithStdin is CLI with stdin, e.g. for `vault write path key=-` so that a
// secret never appears on a command line.
func (v *Vault) CLIWithStdin(t testing.TB, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, st.vaultBin, args...)
	cmd.Env = append(cleanEnv(), "VAULT_ADDR="+v.Addr, "VAULT_TOKEN="+v.Token, "HOME="+v.dir)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &CLIError{Args: args, Err: err, Stderr: stderr.String()}
	}
	return stdout.String(), nil
}

// MustCLI is CLI that fails the test (printing stderr) on error.
func (v *Vault) MustCLI(t testing.TB, args ...string) string {
	t.Helper()
	out, err := v.CLI(t, args...)
	if err != nil {
		t.Fatalf("%v\nstdout: %s", err, out)
	}
	return out
}

// CLIError is the error returned by Vault.CLI.
type CLIError struct {
	Args   []string
	Err    error
	Stderr string
}

func (e *CLIError) Error() string {
	return fmt.Sprintf("vault %s: %v\nstderr: %s", strings.Join(e.Args, " "), e.Err, strings.TrimSpace(e.Stderr))
}

func (e *CLIError) Unwrap() error { return e.Err }

// ExitCode is the CLI's exit status (2 for usage/validation errors in Vault's CLI).
func (e *CLIError) ExitCode() int {
	var ee *exec.ExitError
	if errors.As(e.Err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// Stop stops Vault (SIGTERM to its process group, which also reaches the
// plugin, then SIGKILL after 15s) and SIGKILLs any plugin process of it that
// is still running.
func (v *Vault) Stop(t testing.TB) {
	t.Helper()
	v.proc.stop(15 * time.Second)
}

// Kill SIGKILLs the Vault server alone, as a crash or the OOM killer would,
// and waits for it to exit. It returns the pids of the plugin processes that
// were running. Nothing else is signalled, so a test can watch what they do
// on their own; Stop and t's cleanup SIGKILL any of them still running.
func (v *Vault) Kill(t testing.TB) []int {
	t.Helper()
	pids := v.PluginPIDs()
	if err := v.proc.kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	return pids
}

// PluginPID returns the pid of the running plugin process: a child of the
// vault server whose command line contains vault-plugin-secrets-oauth. It
// waits up to 10s for one to exist; with several, it returns the newest.
func (v *Vault) PluginPID(t testing.TB) int {
	t.Helper()
	var pids []procInfo
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids = v.pluginProcs()
		if len(pids) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PluginPID: no child of vault (pid %d) runs %s", v.proc.cmd.Process.Pid, PluginName)
		}
		time.Sleep(50 * time.Millisecond)
	}
	sort.Slice(pids, func(i, j int) bool { return pids[i].start > pids[j].start })
	return pids[0].pid
}

// PluginPIDs returns the pids of all current plugin processes of this Vault.
func (v *Vault) PluginPIDs() []int {
	var out []int
	for _, p := range v.pluginProcs() {
		out = append(out, p.pid)
	}
	return out
}

type procInfo struct {
	pid   int
	start uint64 // clock ticks after boot
}

func (v *Vault) pluginProcs() []procInfo {
	return childProcs(v.proc.cmd.Process.Pid, PluginName)
}

// childProcs returns the live (not zombie) children of parent whose command
// line contains substr ("" matches all).
func childProcs(parent int, substr string) []procInfo {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, start, state, ok := readProcStat(pid)
		if !ok || ppid != parent || state == "Z" {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte(substr)) {
			continue
		}
		out = append(out, procInfo{pid: pid, start: start})
	}
	return out
}

// readProcStat parses ppid, start time and state from /proc/PID/stat.
func readProcStat(pid int) (ppid int, start uint64, state string, ok bool) {
	f, err := procStatFields(pid)
	if err != nil {
		return 0, 0, "", false
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, "", false
	}
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return ppid, start, f[0], true
}

// procStatFields returns the fields of /proc/PID/stat after "pid (comm) ":
// f[0] is field 3 (state), so field n of proc(5) is f[n-3].
func procStatFields(pid int) ([]string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no comm field", pid)
	}
	// state(3) ppid(4) ... utime(14) stime(15) ... starttime(22).
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return f, nil
}

// clockTicksPerSecond is USER_HZ, the unit of utime and stime in
// /proc/PID/stat (`getconf CLK_TCK`): 100 on every Linux architecture Go
// supports.
const clockTicksPerSecond = 100

// PluginRSS returns the resident set size in bytes (VmRSS of
// /proc/PID/status) of the plugin process PluginPID returns.
func (v *Vault) PluginRSS(t testing.TB) int64 {
	t.Helper()
	pid := v.PluginPID(t)
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("PluginRSS: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			t.Fatalf("PluginRSS: unexpected line %q in /proc/%d/status", line, pid)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			t.Fatalf("PluginRSS: %q in /proc/%d/status: %v", line, pid, err)
		}
		return kb * 1024
	}
	t.Fatalf("PluginRSS: no VmRSS in /proc/%d/status", pid)
	return 0
}

// PluginCPUTime returns the CPU time (user + system, all threads) the plugin
// process PluginPID returns has used so far (utime+stime of /proc/PID/stat).
// The resolution is one clock tick (10ms). A restarted plugin starts again
// from zero.
func (v *Vault) PluginCPUTime(t testing.TB) time.Duration {
	t.Helper()
	return ProcessCPUTime(t, v.PluginPID(t))
}

// PID is the Vault server's process id.
func (v *Vault) PID() int { return v.Cmd.Process.Pid }

// ProcessCPUTime is a process's user+system CPU time from /proc/PID/stat.
func ProcessCPUTime(t testing.TB, pid int) time.Duration {
	t.Helper()
	f, err := procStatFields(pid)
	if err != nil {
		t.Fatalf("ProcessCPUTime: %v", err)
	}
	utime, err1 := strconv.ParseUint(f[14-3], 10, 64)
	stime, err2 := strconv.ParseUint(f[15-3], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("ProcessCPUTime: /proc/%d/stat: %v", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicksPerSecond
}
