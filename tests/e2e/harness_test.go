// Package e2e holds the end-to-end tests: a real Vault 1.21.0 server (dev
// mode) running the real plugin binary, talking to a real OAuth 2.0 / OIDC
// authorization server (tests/upstream, node-oidc-provider).
//
// This file is the shared harness. Every test starts and stops its own
// processes on free loopback ports and leaves nothing running; when a test
// fails, the tail of each process log is printed.
//
// TestMain builds the plugin once. Environment:
//
//	VAULT_BIN       vault binary to run (default ../../.tools/vault-1.21.0/vault,
//	                else ../../scripts/build-vault.sh is run to build/cache it)
//	NODE_BIN        node binary (default: node from PATH)
//	VERSION         version stamped into the plugin (default: git describe or v0.1.0-dev)
//	E2E_PLUGIN_BIN  use this prebuilt plugin binary instead of building
//	                ../../cmd/vault-plugin-secrets-oauth (harness debugging only)
//	E2E_KEEP_LOGS   when set, log the paths of the process logs even on success
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

const (
	pluginName   = "vault-plugin-secrets-oauth"
	vaultVersion = "1.21.0"
	modulePath   = "github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth"

	// defaultClientID is the confidential client the upstream registers for
	// Vault (token_endpoint_auth_method client_secret_basic).
	defaultClientID = "vault-basic"

	logTailLines = 60
)

// Set once by TestMain.
var (
	repoRoot       string // absolute path of the repository root
	pluginDir      string // directory containing only the plugin binary
	pluginPath     string // pluginDir/vault-plugin-secrets-oauth
	pluginSHA256   string // hex sha256 of the plugin binary
	pluginVersion  string // the -X backend.Version value
	vaultBin       string // absolute path of the vault binary
	nodeBin        string // absolute path of node
	upstreamScript string // absolute path of tests/upstream/server.js
)

func TestMain(m *testing.M) {
	os.Exit(runTestMain(m))
}

func runTestMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "oauth-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(tmp)

	start := time.Now()
	if err := setupOnce(tmp); err != nil {
		// A missing vault, node or plugin is a failure, never a skip.
		fmt.Fprintf(os.Stderr, "e2e: setup failed: %v\n", err)
		fmt.Println("FAIL: e2e harness setup")
		return 1
	}
	if os.Getenv("E2E_VERBOSE_SETUP") != "" {
		fmt.Fprintf(os.Stderr, "e2e: setup took %s (vault %s, node %s, plugin %s)\n",
			time.Since(start).Round(time.Millisecond), vaultBin, nodeBin, pluginPath)
	}
	return m.Run()
}

func setupOnce(tmp string) error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	repoRoot, err = filepath.Abs(filepath.Join(wd, "..", ".."))
	if err != nil {
		return err
	}

	// --- the plugin binary -------------------------------------------------
	pluginDir = filepath.Join(tmp, "plugins")
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		return err
	}
	pluginPath = filepath.Join(pluginDir, pluginName)
	pluginVersion = os.Getenv("VERSION")
	if pluginVersion == "" {
		pluginVersion = gitDescribe(repoRoot)
	}
	if prebuilt := os.Getenv("E2E_PLUGIN_BIN"); prebuilt != "" {
		fmt.Fprintf(os.Stderr, "e2e: WARNING: using prebuilt plugin E2E_PLUGIN_BIN=%s instead of building ../../cmd/%s\n", prebuilt, pluginName)
		if err := copyFile(prebuilt, pluginPath, 0o755); err != nil {
			return fmt.Errorf("copy E2E_PLUGIN_BIN: %w", err)
		}
	} else {
		goBin, err := exec.LookPath("go")
		if err != nil {
			return fmt.Errorf("go not found in PATH: %w", err)
		}
		cmd := exec.Command(goBin, "build", "-trimpath",
			"-ldflags", "-X "+modulePath+"/backend.Version="+pluginVersion,
			"-o", pluginPath, "../../cmd/"+pluginName)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building the plugin (%s): %v\n%s", strings.Join(cmd.Args, " "), err, out.String())
		}
	}
	sum, err := fileSHA256(pluginPath)
	if err != nil {
		return err
	}
	pluginSHA256 = sum

	// --- vault -------------------------------------------------------------
	vaultBin, err = findVault()
	if err != nil {
		return err
	}

	// --- node and the upstream ---------------------------------------------
	nodeBin = os.Getenv("NODE_BIN")
	if nodeBin == "" {
		nodeBin = "node"
	}
	if nodeBin, err = exec.LookPath(nodeBin); err != nil {
		return fmt.Errorf("node not found (install nodejs, or set NODE_BIN): %w", err)
	}
	upstreamScript = filepath.Join(repoRoot, "tests", "upstream", "server.js")
	if _, err := os.Stat(upstreamScript); err != nil {
		return fmt.Errorf("upstream server missing: %w", err)
	}
	if _, err := os.Stat(filepath.Join(repoRoot, "tests", "upstream", "node_modules")); err != nil {
		cmd := exec.Command("bash", filepath.Join(repoRoot, "scripts", "upstream-install.sh"))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("scripts/upstream-install.sh: %v\n%s", err, out.String())
		}
	}
	return nil
}

func findVault() (string, error) {
	check := func(p string) (string, error) {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		out, err := exec.Command(abs, "version").CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s version: %v: %s", abs, err, out)
		}
		if !strings.Contains(string(out), "Vault v") {
			return "", fmt.Errorf("%s version printed %q", abs, out)
		}
		return abs, nil
	}
	if p := os.Getenv("VAULT_BIN"); p != "" {
		return check(p)
	}
	local := filepath.Join(repoRoot, ".tools", "vault-"+vaultVersion, "vault")
	if p, err := check(local); err == nil {
		return p, nil
	}
	fmt.Fprintf(os.Stderr, "e2e: no vault at $VAULT_BIN or %s; running scripts/build-vault.sh\n", local)
	cmd := exec.Command("bash", filepath.Join(repoRoot, "scripts", "build-vault.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/build-vault.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return check(strings.TrimSpace(lines[len(lines)-1]))
}

func gitDescribe(dir string) string {
	cmd := exec.Command("git", "describe", "--tags", "--dirty")
	cmd.Dir = dir
	if out, err := cmd.Output(); err == nil {
		if v := strings.TrimSpace(string(out)); v != "" {
			return v
		}
	}
	return "v0.1.0-dev"
}

// ---------------------------------------------------------------------------
// small helpers

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that this test binary has not handed out before.
func freePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("freePort: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		portsMu.Lock()
		used := portsUsed[port]
		portsUsed[port] = true
		portsMu.Unlock()
		if !used {
			return port
		}
	}
	t.Fatalf("freePort: no unused port found")
	return 0
}

// randomHex returns n random bytes, hex encoded.
func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("rand: %v", err)
	}
	return hex.EncodeToString(b)
}

// eventually polls cond every 50ms until it returns true or timeout passes,
// then fails the test with msg.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// tailFile returns the last n lines of path, each cut to maxLineLen bytes.
// With summarize, each line goes through it first (see auditSummary); lines
// it maps to "" are hidden.
func tailFile(path string, n int, summarize func(string) string) string {
	const maxLineLen = 600
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	lines := make([]string, 0, len(all))
	hidden := 0
	for _, l := range all {
		if summarize != nil {
			if l = summarize(l); l == "" {
				hidden++
				continue
			}
		}
		if len(l) > maxLineLen {
			l = fmt.Sprintf("%s... (%d more bytes)", l[:maxLineLen], len(l)-maxLineLen)
		}
		lines = append(lines, l)
	}
	var head []string
	if hidden > 0 {
		head = append(head, fmt.Sprintf("(%d routine lines hidden; full log: %s)", hidden, path))
	}
	if len(lines) > n {
		head = append(head, fmt.Sprintf("... (%d earlier lines omitted)", len(lines)-n))
		lines = lines[len(lines)-n:]
	}
	return strings.Join(append(head, lines...), "\n")
}

// vaultLogFilter hides Vault's per-call gRPC trace lines for plugin calls
// that succeeded ("transport=gRPC status=started/finished" without an
// error); everything else is kept.
func vaultLogFilter(line string) string {
	if strings.Contains(line, "transport=gRPC status=") &&
		(strings.Contains(line, "status=started") || !strings.Contains(line, "err=") || strings.Contains(line, "err=<nil>")) {
		return ""
	}
	return line
}

// auditSummary turns one JSON audit log entry into
// "TIME TYPE OPERATION PATH [error=...]" so a failure shows the sequence of
// requests rather than pages of HMACs. Other lines are returned unchanged.
func auditSummary(line string) string {
	var e struct {
		Time    string `json:"time"`
		Type    string `json:"type"`
		Error   string `json:"error"`
		Request struct {
			Operation string `json:"operation"`
			Path      string `json:"path"`
		} `json:"request"`
		Response struct {
			Data     map[string]any `json:"data"`
			Warnings []string       `json:"warnings"`
		} `json:"response"`
	}
	if err := json.Unmarshal([]byte(line), &e); err != nil || e.Type == "" {
		return line
	}
	out := fmt.Sprintf("%s %-8s %-6s %s", e.Time, e.Type, e.Request.Operation, e.Request.Path)
	if e.Error != "" {
		out += fmt.Sprintf(" error=%q", strings.TrimSpace(e.Error))
	}
	if len(e.Response.Warnings) > 0 {
		out += fmt.Sprintf(" warnings=%q", e.Response.Warnings)
	}
	return out
}

// dumpLogOnFailure registers a cleanup that prints the tail of path when the
// test failed. It is registered AFTER the cleanup that stops the process, so
// it runs first (cleanups run last-in first-out) and the tail shows the
// moment of the failure rather than the shutdown.
func dumpLogOnFailure(t testing.TB, label, path string, summarize func(string) string) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("----- last %d lines of %s (%s) -----\n%s\n----- end of %s -----",
				logTailLines, label, path, tailFile(path, logTailLines, summarize), label)
		} else if os.Getenv("E2E_KEEP_LOGS") != "" {
			t.Logf("%s log: %s", label, path)
		}
	})
}

// cleanEnv is os.Environ() without VAULT_* variables and without the
// upstream's configuration variables, so a developer's shell cannot leak
// into the processes the harness starts.
func cleanEnv(drop ...string) []string {
	var env []string
outer:
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VAULT_") {
			continue
		}
		for _, d := range drop {
			if strings.HasPrefix(kv, d+"=") {
				continue outer
			}
		}
		env = append(env, kv)
	}
	return env
}

// ---------------------------------------------------------------------------
// process: a child in its own process group, logging to a file.

type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
	stopped bool
}

func startProcess(name, logPath string, env []string, bin string, args ...string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logFile, "=== %s: %s %s (started %s)\n", name, bin, strings.Join(args, " "), time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: Stop kills the process and anything it spawned
		// (Vault's plugin processes) as a unit.
		Setpgid: true,
		// If the test binary dies (e.g. go test -timeout panics), the kernel
		// sends SIGTERM so nothing outlives it; Vault then stops its plugins.
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs
// the whole group (including any stragglers such as orphaned plugins).
func (p *process) stop(grace time.Duration) {
	if p == nil || p.stopped {
		return
	}
	p.stopped = true
	pgid := p.cmd.Process.Pid
	if !p.exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// ---------------------------------------------------------------------------
// The upstream OAuth server (tests/upstream/server.js, node-oidc-provider).

// UpstreamOptions configure startUpstream. Zero values mean defaults.
type UpstreamOptions struct {
	// AccessTokenTTL of issued access tokens (0: the server's default).
	AccessTokenTTL time.Duration
	// ClientSecret of the confidential clients. Default: 32 random hex chars,
	// so tests can grep logs for it.
	ClientSecret string
	// Port to listen on (0: a free port).
	Port int
	// StateFile: when set, the server loads it at start and saves its state
	// (grants, tokens) there on SIGTERM, so Restart keeps issued tokens valid.
	StateFile string
	// RedirectURIs of the clients (authorization code flow), in addition to
	// the server's built-in http://127.0.0.1/callback.
	RedirectURIs []string
	// RefreshTokenTTL of refresh tokens (0: the server's default, 14 days).
	RefreshTokenTTL time.Duration
	// ClientCredentialsTTL of client_credentials access tokens (0: default 300s).
	ClientCredentialsTTL time.Duration
	// DevicePollInterval returned by the device authorization endpoint (0: 1s).
	DevicePollInterval time.Duration
	// Env: extra environment variables ("KEY=value") for the server.
	Env []string
}

// Upstream is a running tests/upstream/server.js.
type Upstream struct {
	URL          string // issuer, e.g. http://127.0.0.1:40123
	ClientSecret string
	ClientID     string // "vault-basic"
	Port         int
	StateFile    string
	LogPath      string
	// Discovery is the parsed /.well-known/openid-configuration.
	Discovery map[string]any

	opts UpstreamOptions
	proc *process
	http *http.Client
}

// UpstreamStats is GET /test/stats.
type UpstreamStats struct {
	TokenRequests    map[string]int       `json:"token_requests"`
	TokenErrors      map[string]int       `json:"token_errors"`
	RefreshesByGrant map[string]int       `json:"refreshes_by_grant"`
	RotationsByGrant map[string]int       `json:"rotations_by_grant"`
	Revocations      []UpstreamRevocation `json:"revocations"`
	Introspections   int                  `json:"introspections"`
	// Raw is the whole document, for fields not modelled above.
	Raw map[string]any `json:"-"`
}

// UpstreamRevocation is one entry of UpstreamStats.Revocations (one call of
// the revocation endpoint, successful or not).
type UpstreamRevocation struct {
	TokenTypeHint string `json:"token_type_hint"` // "" when none was sent
	Kind          string `json:"kind"`            // AccessToken, RefreshToken, ClientCredentials or "unknown"
	GrantID       string `json:"grant_id"`
	ClientID      string `json:"client_id"`
	Status        int    `json:"status"` // HTTP status the endpoint answered
	At            int64  `json:"at"`     // unix milliseconds
}

// TokenState is GET /test/token?value=...: what the server knows about a token.
type TokenState struct {
	Found      bool   `json:"found"`
	Kind       string `json:"kind"` // AccessToken, RefreshToken, ClientCredentials, ...
	Active     bool   `json:"active"`
	GrantID    string `json:"grant_id"`
	GrantFound bool   `json:"grant_found"`
	Scope      string `json:"scope"`
	Consumed   bool   `json:"consumed"` // a rotated (used) refresh token
	ClientID   string `json:"client_id"`
	AccountID  string `json:"account_id"`
	Exp        int64  `json:"exp"` // unix seconds
	// Raw is the whole document.
	Raw map[string]any `json:"-"`
}

// GrantState is GET /test/grant?id=...
type GrantState struct {
	Found        bool           `json:"found"`
	ClientID     string         `json:"client_id"`
	AccountID    string         `json:"account_id"`
	Scope        string         `json:"scope"`
	Tokens       map[string]int `json:"tokens"`        // by model, including consumed/expired ones still stored
	ActiveTokens map[string]int `json:"active_tokens"` // by model
	Raw          map[string]any `json:"-"`
}

// MintRequest is the body of POST /test/mint. Empty fields take the server's
// defaults (vault-basic, "offline_access api:read api:write", alice).
type MintRequest struct {
	ClientID        string `json:"client_id,omitempty"`
	Scope           string `json:"scope,omitempty"`
	AccountID       string `json:"account_id,omitempty"`
	RefreshTokenTTL int    `json:"refresh_token_ttl,omitempty"` // seconds
}

// startUpstream starts the upstream OAuth server and waits until its
// discovery document answers. It is stopped at test cleanup.
func startUpstream(t testing.TB, opts UpstreamOptions) *Upstream {
	t.Helper()
	if opts.ClientSecret == "" {
		opts.ClientSecret = randomHex(t, 16)
	}
	if opts.Port == 0 {
		opts.Port = freePort(t)
	}
	u := &Upstream{
		URL:          fmt.Sprintf("http://127.0.0.1:%d", opts.Port),
		ClientSecret: opts.ClientSecret,
		ClientID:     defaultClientID,
		Port:         opts.Port,
		StateFile:    opts.StateFile,
		LogPath:      filepath.Join(t.TempDir(), "upstream.log"),
		opts:         opts,
		http:         &http.Client{Timeout: 30 * time.Second},
	}
	t.Cleanup(func() { u.proc.stop(10 * time.Second) })
	dumpLogOnFailure(t, "upstream log", u.LogPath, nil)
	u.start(t)
	return u
}

func (u *Upstream) env() []string {
	env := cleanEnv("PORT", "HOST", "ISSUER", "CLIENT_SECRET", "REDIRECT_URIS", "STATE_FILE",
		"ACCESS_TOKEN_TTL", "REFRESH_TOKEN_TTL", "CLIENT_CREDENTIALS_TTL", "DEVICE_POLL_INTERVAL")
	env = append(env,
		"PORT="+strconv.Itoa(u.Port),
		"HOST=127.0.0.1",
		"ISSUER="+u.URL,
		"CLIENT_SECRET="+u.ClientSecret,
	)
	if len(u.opts.RedirectURIs) > 0 {
		env = append(env, "REDIRECT_URIS="+strings.Join(u.opts.RedirectURIs, ","))
	}
	if u.StateFile != "" {
		env = append(env, "STATE_FILE="+u.StateFile)
	}
	for name, d := range map[string]time.Duration{
		"ACCESS_TOKEN_TTL":       u.opts.AccessTokenTTL,
		"REFRESH_TOKEN_TTL":      u.opts.RefreshTokenTTL,
		"CLIENT_CREDENTIALS_TTL": u.opts.ClientCredentialsTTL,
		"DEVICE_POLL_INTERVAL":   u.opts.DevicePollInterval,
	} {
		if d > 0 {
			// The server takes whole seconds (>= 1).
			env = append(env, name+"="+strconv.Itoa(max(1, int((d+time.Second-1)/time.Second))))
		}
	}
	return append(env, u.opts.Env...)
}

func (u *Upstream) start(t testing.TB) {
	t.Helper()
	p, err := startProcess("upstream", u.LogPath, u.env(), nodeBin, upstreamScript)
	if err != nil {
		t.Fatalf("startUpstream: %v", err)
	}
	u.proc = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		doc, err := u.fetchDiscovery()
		if err == nil {
			u.Discovery = doc
			return
		}
		if p.exited() {
			t.Fatalf("startUpstream: server exited during startup (%v); see the upstream log below", p.waitErr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("startUpstream: %s/.well-known/openid-configuration did not answer within 30s: %v", u.URL, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (u *Upstream) fetchDiscovery() (map[string]any, error) {
	resp, err := u.http.Get(u.URL + "/.well-known/openid-configuration")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return nil, err
	}
	return doc, nil
}

// Stop stops the server with SIGTERM and waits for it (it saves StateFile
// on the way out when one is set).
func (u *Upstream) Stop(t testing.TB) {
	t.Helper()
	u.proc.stop(10 * time.Second)
}

// Restart stops the server if it is running and starts it again on the same
// port with the same options and state file.
func (u *Upstream) Restart(t testing.TB) {
	t.Helper()
	u.proc.stop(10 * time.Second)
	u.start(t)
}

// endpoint returns a URL from the discovery document.
func (u *Upstream) endpoint(t testing.TB, key string) string {
	t.Helper()
	s, _ := u.Discovery[key].(string)
	if s == "" {
		t.Fatalf("upstream discovery document has no %q", key)
	}
	return s
}

func (u *Upstream) doJSON(t testing.TB, req *http.Request, wantStatus int, out any) {
	t.Helper()
	resp, err := u.http.Do(req)
	if err != nil {
		t.Fatalf("upstream %s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("upstream %s %s: status %s, body %s", req.Method, req.URL.Path, resp.Status, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("upstream %s %s: decoding %s: %v", req.Method, req.URL.Path, body, err)
		}
	}
}

// Mint asks the test backdoor (POST /test/mint) for a refresh token of a new
// grant for account, client clientID and scope (space separated). It
// returns the refresh token and the grant id.
func (u *Upstream) Mint(t testing.TB, clientID, scope, account string) (refreshToken, grantID string) {
	t.Helper()
	return u.MintWith(t, MintRequest{ClientID: clientID, Scope: scope, AccountID: account})
}

// MintWith is Mint with every option of POST /test/mint.
func (u *Upstream) MintWith(t testing.TB, r MintRequest) (refreshToken, grantID string) {
	t.Helper()
	body, _ := json.Marshal(r)
	req, _ := http.NewRequest(http.MethodPost, u.URL+"/test/mint", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	var out struct {
		RefreshToken string `json:"refresh_token"`
		GrantID      string `json:"grant_id"`
	}
	u.doJSON(t, req, http.StatusOK, &out)
	if out.RefreshToken == "" {
		t.Fatalf("upstream /test/mint returned no refresh_token")
	}
	return out.RefreshToken, out.GrantID
}

// Stats returns GET /test/stats.
func (u *Upstream) Stats(t testing.TB) UpstreamStats {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u.URL+"/test/stats", nil)
	var raw json.RawMessage
	u.doJSON(t, req, http.StatusOK, &raw)
	var s UpstreamStats
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("upstream /test/stats: %v", err)
	}
	_ = json.Unmarshal(raw, &s.Raw)
	return s
}

// TokenState returns GET /test/token?value=VALUE.
func (u *Upstream) TokenState(t testing.TB, value string) TokenState {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u.URL+"/test/token?value="+url.QueryEscape(value), nil)
	var raw json.RawMessage
	u.doJSON(t, req, http.StatusOK, &raw)
	var s TokenState
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("upstream /test/token: %v", err)
	}
	_ = json.Unmarshal(raw, &s.Raw)
	return s
}

// Grant returns GET /test/grant?id=GRANTID.
func (u *Upstream) Grant(t testing.TB, grantID string) GrantState {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u.URL+"/test/grant?id="+url.QueryEscape(grantID), nil)
	var raw json.RawMessage
	u.doJSON(t, req, http.StatusOK, &raw)
	var g GrantState
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatalf("upstream /test/grant: %v", err)
	}
	_ = json.Unmarshal(raw, &g.Raw)
	return g
}

// ResetStats zeroes the server's statistics (POST /test/reset-stats).
func (u *Upstream) ResetStats(t testing.TB) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u.URL+"/test/reset-stats", nil)
	u.doJSON(t, req, http.StatusOK, nil)
}

// Introspect performs a real RFC 7662 introspection of token at the
// provider's introspection_endpoint, authenticating as vault-basic.
func (u *Upstream) Introspect(t testing.TB, token string) map[string]any {
	t.Helper()
	form := url.Values{"token": {token}}
	req, _ := http.NewRequest(http.MethodPost, u.endpoint(t, "introspection_endpoint"), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(u.ClientID), url.QueryEscape(u.ClientSecret))
	var out map[string]any
	u.doJSON(t, req, http.StatusOK, &out)
	return out
}

// ---------------------------------------------------------------------------
// Vault

// VaultOptions configure startVaultWith. The zero value is what startVault uses.
type VaultOptions struct {
	// ExtraArgs are appended to `vault server -dev ...`.
	ExtraArgs []string
	// Env: extra environment variables ("KEY=value") for the server.
	Env []string
	// NoAudit skips enabling the file audit device.
	NoAudit bool
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
	LogPath      string // server stdout+stderr, -log-level=trace
	AuditLogPath string // file audit device, log_raw=false (values HMAC'd)
	PluginDir    string
	PluginSHA256 string
	Mount        string // "oauth"

	proc *process
	dir  string
}

// startVault starts a dev-mode Vault with a file audit device and the plugin
// registered (with its sha256, as users do) and mounted at oauth/.
func startVault(t testing.TB) *Vault {
	t.Helper()
	return startVaultWith(t, VaultOptions{})
}

func startVaultWith(t testing.TB, opts VaultOptions) *Vault {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	v := &Vault{
		Addr:         fmt.Sprintf("http://127.0.0.1:%d", port),
		Token:        "root-" + randomHex(t, 12),
		Port:         port,
		LogPath:      filepath.Join(dir, "vault.log"),
		AuditLogPath: filepath.Join(dir, "audit.log"),
		PluginDir:    pluginDir,
		PluginSHA256: pluginSHA256,
		Mount:        "oauth",
		dir:          dir,
	}
	t.Cleanup(func() { v.proc.stop(15 * time.Second) })
	dumpLogOnFailure(t, "vault server log", v.LogPath, vaultLogFilter)

	args := []string{"server", "-dev",
		"-dev-root-token-id=" + v.Token,
		"-dev-listen-address=127.0.0.1:" + strconv.Itoa(port),
		"-dev-plugin-dir=" + pluginDir,
		"-dev-no-store-token", // never touch ~/.vault-token
		"-log-level=trace",
	}
	args = append(args, opts.ExtraArgs...)
	env := append(cleanEnv(), "HOME="+dir) // vault -dev must not read or write the real ~
	env = append(env, opts.Env...)
	p, err := startProcess("vault", v.LogPath, env, vaultBin, args...)
	if err != nil {
		t.Fatalf("startVault: %v", err)
	}
	v.proc, v.Cmd = p, p.cmd

	cfg := api.DefaultConfig()
	cfg.Address = v.Addr
	cfg.MaxRetries = 0 // a retried request would hit the plugin (and upstream) twice
	cfg.Timeout = 60 * time.Second
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatalf("startVault: api client: %v", err)
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
			t.Fatalf("startVault: vault exited during startup (%v); see the vault log below", p.waitErr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("startVault: %s/v1/sys/health not OK within 60s (last error %v)", v.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if !opts.NoAudit {
		// File audit device with the default log_raw=false: Vault HMACs every
		// string in requests and responses, so a secret showing up verbatim
		// in the audit log means it was put somewhere Vault does not HMAC
		// (error messages, warnings, headers, ...). assertNoSecretsInLogs
		// checks for exactly that.
		dumpLogOnFailure(t, "vault audit log (summarized: time type operation path error)", v.AuditLogPath, auditSummary)
		v.MustCLI(t, "audit", "enable", "file", "file_path="+v.AuditLogPath, "log_raw=false")
	}
	if !opts.NoMount {
		// -dev-plugin-dir already auto-registered the binary; register again
		// with its sha256 exactly as an operator would.
		v.MustCLI(t, "plugin", "register", "-sha256="+pluginSHA256, "secret", pluginName)
		v.MustCLI(t, "secrets", "enable", "-path="+v.Mount, pluginName)
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
	cmd := exec.CommandContext(ctx, vaultBin, args...)
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
// plugin, then SIGKILL after 15s).
func (v *Vault) Stop(t testing.TB) {
	t.Helper()
	v.proc.stop(15 * time.Second)
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
			t.Fatalf("PluginPID: no child of vault (pid %d) runs %s", v.proc.cmd.Process.Pid, pluginName)
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
	parent := v.proc.cmd.Process.Pid
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
		if err != nil || !bytes.Contains(cmdline, []byte(pluginName)) {
			continue
		}
		out = append(out, procInfo{pid: pid, start: start})
	}
	return out
}

// readProcStat parses ppid, start time and state from /proc/PID/stat.
func readProcStat(pid int) (ppid int, start uint64, state string, ok bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, "", false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, "", false
	}
	// After "pid (comm) ": state(3) ppid(4) ... starttime(22).
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, 0, "", false
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, "", false
	}
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return ppid, start, f[0], true
}

// ---------------------------------------------------------------------------
// Secret leak checks

// assertNoSecretsInLogs fails the test if any of secrets appears verbatim in
// the Vault server log or the audit log. The failure names the file and the
// secret by index (secret #0, #1, ...) and length, never its value.
func assertNoSecretsInLogs(t testing.TB, v *Vault, secrets ...string) {
	t.Helper()
	named := make(map[string]string, len(secrets))
	for i, s := range secrets {
		named[fmt.Sprintf("secret #%d", i)] = s
	}
	assertNoNamedSecretsInLogs(t, v, named)
}

// assertNoNamedSecretsInLogs is assertNoSecretsInLogs with labels, e.g.
// {"refresh token": rt, "client secret": up.ClientSecret}.
func assertNoNamedSecretsInLogs(t testing.TB, v *Vault, secrets map[string]string) {
	t.Helper()
	files := []struct{ label, path string }{
		{"vault server log", v.LogPath},
		{"vault audit log", v.AuditLogPath},
	}
	labels := make([]string, 0, len(secrets))
	for l := range secrets {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	for _, l := range labels {
		if len(secrets[l]) < 4 {
			t.Errorf("assertNoSecretsInLogs: %s is empty or shorter than 4 bytes; refusing to search for it", l)
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(f.path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && f.path == v.AuditLogPath {
				continue // audit device not enabled (VaultOptions.NoAudit)
			}
			t.Errorf("assertNoSecretsInLogs: reading %s: %v", f.label, err)
			continue
		}
		for _, l := range labels {
			s := secrets[l]
			if len(s) < 4 {
				continue
			}
			if n := bytes.Count(data, []byte(s)); n > 0 {
				t.Errorf("%s (%d bytes) appears verbatim %d time(s) in the %s (%s), first on line %d",
					l, len(s), n, f.label, f.path, firstLine(data, []byte(s)))
			}
		}
	}
}

func firstLine(data, needle []byte) int {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1024*1024), 64*1024*1024)
	for n := 1; sc.Scan(); n++ {
		if bytes.Contains(sc.Bytes(), needle) {
			return n
		}
	}
	return -1
}

// ---------------------------------------------------------------------------

// TestHarnessSmoke checks the harness itself: the upstream starts and its
// test backdoor works, Vault starts with the plugin mounted at oauth/.
func TestHarnessSmoke(t *testing.T) {
	start := time.Now()
	up := startUpstream(t, UpstreamOptions{})
	upReady := time.Since(start)
	v := startVault(t)
	t.Logf("upstream ready in %s, vault ready in %s", upReady.Round(time.Millisecond), (time.Since(start) - upReady).Round(time.Millisecond))

	out := v.MustCLI(t, "secrets", "list", "-format=json")
	var mounts map[string]struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal([]byte(out), &mounts); err != nil {
		t.Fatalf("secrets list: %v\n%s", err, out)
	}
	if m, ok := mounts["oauth/"]; !ok || m.Type != pluginName {
		t.Fatalf("secrets list: want oauth/ of type %s, got %s", pluginName, out)
	}
	if pid := v.PluginPID(t); pid <= 0 {
		t.Fatalf("PluginPID = %d", pid)
	}

	rt, grant := up.Mint(t, defaultClientID, "offline_access api:read", "smoke")
	if rt == "" || grant == "" {
		t.Fatalf("Mint: refresh token %d bytes, grant %q", len(rt), grant)
	}
	if st := up.Stats(t); st.Raw == nil {
		t.Fatalf("Stats: empty")
	}
	if got := up.Introspect(t, rt); got["active"] != true {
		t.Fatalf("Introspect(minted refresh token): %v", got)
	}
	assertNoSecretsInLogs(t, v, rt, up.ClientSecret)
}
