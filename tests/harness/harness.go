// Package harness runs the real processes the end-to-end tests and the
// benchmarks need: a real Vault 1.21.0 server (dev mode) running the real
// plugin binary, talking to a real OAuth 2.0 / OIDC authorization server
// (tests/upstream, node-oidc-provider).
//
// Every StartVault / StartUpstream starts its own processes on free loopback
// ports and stops them at the test's (or benchmark's) cleanup, leaving
// nothing running; when a test fails, the tail of each process log is
// printed. All helpers take a testing.TB, so *testing.T and *testing.B both
// work.
//
// Setup builds the plugin once per process. Call it from TestMain (and run
// its cleanup after m.Run); if it was not called, the first StartVault or
// StartUpstream calls it and fails the test on error (the temporary plugin
// directory is then only removed if something calls Setup's cleanup).
// Environment:
//
//	VAULT_BIN       vault binary to run (default <repo>/.tools/vault-1.21.0/vault,
//	                else <repo>/scripts/build-vault.sh is run to build/cache it)
//	NODE_BIN        node binary (default: node from PATH)
//	VERSION         version stamped into the plugin (default: git describe or v0.0.0-dev)
//	E2E_PLUGIN_BIN  use this prebuilt plugin binary instead of building
//	                <repo>/cmd/vault-plugin-secrets-oauth (harness debugging only)
//	E2E_KEEP_LOGS   when set, log the paths of the process logs even on success
//	E2E_VERBOSE_SETUP  when set, Setup reports what it found and how long it took
//
// The repository root is found from this package's source directory (or,
// failing that, the current directory) by walking up to the go.mod of the
// module, so the harness works from any package.
package harness

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// PluginName is the plugin's binary name, its catalog name and the mount
	// type reported by Vault.
	PluginName = "vault-plugin-secrets-oauth"
	// VaultVersion is the Vault release the harness runs.
	VaultVersion = "1.21.0"
	// ModulePath is the plugin's Go module.
	ModulePath = "github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth"

	// DefaultClientID is the confidential client the upstream registers for
	// Vault (token_endpoint_auth_method client_secret_basic).
	DefaultClientID = "vault-basic"

	logTailLines = 60
)

// setupState is everything Setup finds or builds.
type setupState struct {
	tmp            string // temporary directory holding pluginDir
	repoRoot       string // absolute path of the repository root
	pluginDir      string // directory containing only the plugin binary
	pluginPath     string // pluginDir/vault-plugin-secrets-oauth
	pluginSHA256   string // hex sha256 of the plugin binary
	pluginVersion  string // the -X backend.Version value
	vaultBin       string // absolute path of the vault binary
	nodeBin        string // absolute path of node
	upstreamScript string // absolute path of tests/upstream/server.js
}

var (
	setupOnce    sync.Once
	setupErr     error
	setupCleanup func()
	st           setupState

	cleanupMu   sync.Mutex
	cleanedUp   bool
	cleanupOnce sync.Once
)

// Setup does the one-time setup: it finds the repository root, builds the
// plugin with -ldflags "-X <module>/backend.Version=$VERSION" into a
// temporary directory, and locates vault and node (installing the
// upstream's node modules if they are missing). It runs once per process:
// later calls return the same cleanup and error. cleanup removes the
// temporary directory; it is idempotent, and after it StartVault fails.
func Setup() (cleanup func(), err error) {
	setupOnce.Do(func() {
		start := time.Now()
		setupErr = doSetup()
		setupCleanup = func() {
			cleanupOnce.Do(func() {
				cleanupMu.Lock()
				cleanedUp = true
				cleanupMu.Unlock()
				if st.tmp != "" {
					os.RemoveAll(st.tmp)
				}
			})
		}
		if setupErr != nil {
			// Nothing useful is left in tmp.
			setupCleanup()
			return
		}
		if os.Getenv("E2E_VERBOSE_SETUP") != "" {
			fmt.Fprintf(os.Stderr, "harness: setup took %s (vault %s, node %s, plugin %s)\n",
				time.Since(start).Round(time.Millisecond), st.vaultBin, st.nodeBin, st.pluginPath)
		}
	})
	return setupCleanup, setupErr
}

// ensureSetup runs Setup if it has not run and fails t if it failed or its
// cleanup already ran.
func ensureSetup(t testing.TB) {
	t.Helper()
	if _, err := Setup(); err != nil {
		// A missing vault, node or plugin is a failure, never a skip.
		t.Fatalf("harness setup failed: %v", err)
	}
	cleanupMu.Lock()
	done := cleanedUp
	cleanupMu.Unlock()
	if done {
		t.Fatalf("harness: used after Setup's cleanup ran")
	}
}

// PluginVersion is the version stamped into the plugin binary (the
// -X backend.Version value). It runs Setup if needed ("" if that failed).
func PluginVersion() string { Setup(); return st.pluginVersion }

// PluginSHA256 is the hex sha256 of the plugin binary Vault runs. It runs
// Setup if needed ("" if that failed).
func PluginSHA256() string { Setup(); return st.pluginSHA256 }

// PluginPath is the absolute path of the built plugin binary. It runs Setup
// if needed ("" if that failed).
func PluginPath() string { Setup(); return st.pluginPath }

// VaultBin is the absolute path of the vault binary. It runs Setup if needed
// ("" if that failed).
func VaultBin() string { Setup(); return st.vaultBin }

// RepoRoot is the absolute path of the repository root. It runs Setup if
// needed ("" if that failed before finding the root).
func RepoRoot() string { Setup(); return st.repoRoot }

func doSetup() error {
	root, err := findRepoRoot()
	if err != nil {
		return err
	}
	st.repoRoot = root

	tmp, err := os.MkdirTemp("", "oauth-harness-")
	if err != nil {
		return err
	}
	st.tmp = tmp

	// --- the plugin binary -------------------------------------------------
	st.pluginDir = filepath.Join(tmp, "plugins")
	if err := os.MkdirAll(st.pluginDir, 0o755); err != nil {
		return err
	}
	st.pluginPath = filepath.Join(st.pluginDir, PluginName)
	st.pluginVersion = os.Getenv("VERSION")
	if st.pluginVersion == "" {
		st.pluginVersion = gitDescribe(root)
	}
	if prebuilt := os.Getenv("E2E_PLUGIN_BIN"); prebuilt != "" {
		fmt.Fprintf(os.Stderr, "harness: WARNING: using prebuilt plugin E2E_PLUGIN_BIN=%s instead of building ./cmd/%s\n", prebuilt, PluginName)
		if err := copyFile(prebuilt, st.pluginPath, 0o755); err != nil {
			return fmt.Errorf("copy E2E_PLUGIN_BIN: %w", err)
		}
	} else {
		goBin, err := exec.LookPath("go")
		if err != nil {
			return fmt.Errorf("go not found in PATH: %w", err)
		}
		cmd := exec.Command(goBin, "build", "-trimpath",
			"-ldflags", "-X "+ModulePath+"/backend.Version="+st.pluginVersion,
			"-o", st.pluginPath, "./cmd/"+PluginName)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building the plugin (%s in %s): %v\n%s", strings.Join(cmd.Args, " "), root, err, out.String())
		}
	}
	sum, err := fileSHA256(st.pluginPath)
	if err != nil {
		return err
	}
	st.pluginSHA256 = sum

	// --- vault -------------------------------------------------------------
	if st.vaultBin, err = findVault(root); err != nil {
		return err
	}

	// --- node and the upstream ---------------------------------------------
	nodeBin := os.Getenv("NODE_BIN")
	if nodeBin == "" {
		nodeBin = "node"
	}
	if st.nodeBin, err = exec.LookPath(nodeBin); err != nil {
		return fmt.Errorf("node not found (install nodejs, or set NODE_BIN): %w", err)
	}
	if st.nodeBin, err = filepath.Abs(st.nodeBin); err != nil {
		return err
	}
	st.upstreamScript = filepath.Join(root, "tests", "upstream", "server.js")
	if _, err := os.Stat(st.upstreamScript); err != nil {
		return fmt.Errorf("upstream server missing: %w", err)
	}
	if _, err := os.Stat(filepath.Join(root, "tests", "upstream", "node_modules")); err != nil {
		cmd := exec.Command("bash", filepath.Join(root, "scripts", "upstream-install.sh"))
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("scripts/upstream-install.sh: %v\n%s", err, out.String())
		}
	}
	return nil
}

// findRepoRoot walks up from this source file's directory, then from the
// current directory, to the directory whose go.mod declares ModulePath.
func findRepoRoot() (string, error) {
	var starts []string
	// With -trimpath the file name is module-relative, not absolute.
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for {
			if isModuleRoot(dir) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("cannot find the repository root (go.mod of %s) above %s", ModulePath, strings.Join(starts, " or "))
}

func isModuleRoot(dir string) bool {
	data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "module" && strings.Trim(f[1], `"`) == ModulePath {
			return true
		}
	}
	return false
}

func findVault(root string) (string, error) {
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
	local := filepath.Join(root, ".tools", "vault-"+VaultVersion, "vault")
	if p, err := check(local); err == nil {
		return p, nil
	}
	fmt.Fprintf(os.Stderr, "harness: no vault at $VAULT_BIN or %s; running scripts/build-vault.sh\n", local)
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "build-vault.sh"))
	cmd.Dir = root
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
	return "v0.0.0-dev"
}

// ---------------------------------------------------------------------------
// small helpers

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that this process has not handed out before.
func FreePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("FreePort: %v", err)
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
	t.Fatalf("FreePort: no unused port found")
	return 0
}

// RandomHex returns n random bytes, hex encoded.
func RandomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("rand: %v", err)
	}
	return hex.EncodeToString(b)
}

// Eventually polls cond every 50ms until it returns true or timeout passes,
// then fails the test with msg (a format string for args).
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
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

// cleanEnv is os.Environ() without VAULT_* variables and without the
// variables named in drop, so a developer's shell cannot leak into the
// processes the harness starts.
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

// RunTests is a TestMain body for packages that use the harness: it sets up
// once, runs the tests and cleans up. A missing vault, node or plugin fails
// the package; it is never a skip.
func RunTests(m *testing.M) int {
	cleanup, err := Setup()
	defer cleanup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "harness: setup failed: %v\n", err)
		fmt.Println("FAIL: harness setup")
		return 1
	}
	return m.Run()
}

// freePortPair returns a free port whose successor is free too: a dev-mode
// Vault listens on its port and runs its cluster listener on the next one.
func freePortPair(t testing.TB) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		port := FreePort(t)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+1))
		if err != nil {
			continue
		}
		l.Close()
		portsMu.Lock()
		taken := portsUsed[port+1]
		portsUsed[port+1] = true
		portsMu.Unlock()
		if !taken {
			return port
		}
	}
	t.Fatalf("freePortPair: no two adjacent free ports found")
	return 0
}
