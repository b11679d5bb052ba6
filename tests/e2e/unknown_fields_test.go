package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// unknownFieldWarning is the warning Vault's framework adds to a response
// when a request carries fields the path does not know. It adds it only to
// a non-nil response: an engine that answers nil (as deletes often do)
// silently drops it.
const unknownFieldWarning = "Endpoint ignored these unrecognized parameters"

// vaultCLIOutput runs the real vault binary against v, as an operator's
// shell would (VAULT_ADDR, VAULT_TOKEN, a private HOME), and returns what it
// printed on stdout and stderr together, and its exit status. Unlike
// harness.Vault.CLI it keeps stderr on success: the CLI may print warnings
// there.
func vaultCLIOutput(t *testing.T, v *harness.Vault, home, stdin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.VaultBin(), args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "VAULT_ADDR="+v.Addr, "VAULT_TOKEN="+v.Token, "HOME="+home)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("vault %s: %v", strings.Join(args, " "), err)
		}
		code = ee.ExitCode()
	}
	return out.String(), code
}

// TestUnknownFieldWarningReachesTheCLI: a misspelled field is ignored, and
// the operator is told so by the real vault CLI, on every write and delete
// path of the engine. `vault write oauth/roles/r grant=g scoops=api:read`
// used to print only "Success!" and store a role without scope limits.
func TestUnknownFieldWarningReachesTheCLI(t *testing.T) {
	start := time.Now()
	up := harness.StartUpstream(t, harness.UpstreamOptions{})
	v := harness.StartVault(t)
	home := t.TempDir()
	v.MustCLI(t, "write", "oauth/config", "upstream_timeout=5s", "redirect_uri="+v.Addr+"/v1/oauth/callback")
	v.MustCLI(t, "write", "oauth/providers/local",
		"issuer="+up.URL, "client_id="+up.ClientID, "client_secret="+up.ClientSecret)
	rt, _ := up.Mint(t, up.ClientID, "offline_access api:read api:write", "alice")
	v.MustCLI(t, "write", "oauth/grants/g", "provider=local", "refresh_token="+rt, "scopes=api:read,api:write")
	tokenURL := up.Endpoint(t, "token_endpoint")

	read := func(t *testing.T, path string) map[string]any {
		t.Helper()
		s, err := v.Client.Logical().Read(path)
		if err != nil || s == nil {
			t.Fatalf("read %s: %v (%v)", path, err, s)
		}
		return s.Data
	}
	gone := func(t *testing.T, path string) {
		t.Helper()
		if s, err := v.Client.Logical().Read(path); err != nil || s != nil {
			t.Errorf("%s after delete: %v %v", path, s, err)
		}
	}

	type step struct {
		what    string
		stdin   string
		args    []string
		unknown string // the misspelled field the warning must name
		// after checks what was stored: the operator's intent was NOT
		// applied, which is exactly why the warning matters.
		after func(t *testing.T)
	}
	steps := []step{
		{
			what: "config write", args: []string{"write", "oauth/config", "tidy_intervall=30s"}, unknown: "tidy_intervall",
			after: func(t *testing.T) {
				if got := fmt.Sprint(read(t, "oauth/config")["tidy_interval"]); got != "60" {
					t.Errorf("config tidy_interval = %s, want the default 60", got)
				}
			},
		},
		{
			what:    "provider create",
			args:    []string{"write", "oauth/providers/p", "token_url=" + tokenURL, "client_id=c", "client_secret=s", "clientauth=none"},
			unknown: "clientauth",
			after: func(t *testing.T) {
				if got := read(t, "oauth/providers/p")["client_auth"]; got != "client_secret_basic" {
					t.Errorf("provider p client_auth = %v, want the default client_secret_basic", got)
				}
			},
		},
		{
			what: "provider update", args: []string{"write", "oauth/providers/p", "scops=api:read"}, unknown: "scops",
			after: func(t *testing.T) {
				if got := fmt.Sprint(read(t, "oauth/providers/p")["scopes"]); got != "[]" {
					t.Errorf("provider p scopes = %s, want []", got)
				}
			},
		},
		{
			what:  "grant create",
			stdin: "rt-not-real-" + harness.RandomHex(t, 8),
			args:  []string{"write", "oauth/grants/g2", "provider=local", "refresh_token=-", "scops=api:read"}, unknown: "scops",
			after: func(t *testing.T) {
				if got := fmt.Sprint(read(t, "oauth/grants/g2")["scopes"]); got != "[]" {
					t.Errorf("grant g2 scopes = %s, want []", got)
				}
			},
		},
		{
			what: "grant update", args: []string{"write", "oauth/grants/g2", "max_ag=1h"}, unknown: "max_ag",
			after: func(t *testing.T) {
				if got := fmt.Sprint(read(t, "oauth/grants/g2")["max_age"]); got != "0" {
					t.Errorf("grant g2 max_age = %s, want 0", got)
				}
			},
		},
		{
			what: "role create (the issue's example)", args: []string{"write", "oauth/roles/r", "grant=g", "scoops=api:read"}, unknown: "scoops",
			after: func(t *testing.T) {
				// The operator meant api:read only; the role has no
				// scope limit at all. The warning is all that tells them.
				if got := fmt.Sprint(read(t, "oauth/roles/r")["scopes"]); got != "[]" {
					t.Errorf("role r scopes = %s, want [] (the misspelled field must not be applied)", got)
				}
			},
		},
		{
			what: "role update", args: []string{"write", "oauth/roles/r", "tll=5m"}, unknown: "tll",
			after: func(t *testing.T) {
				if got := fmt.Sprint(read(t, "oauth/roles/r")["ttl"]); got != "0" {
					t.Errorf("role r ttl = %s, want 0", got)
				}
			},
		},
		{what: "authorize", args: []string{"write", "oauth/grants/g2/authorize", "scops=api:read"}, unknown: "scops"},
		{what: "device", args: []string{"write", "oauth/grants/dev/device", "provider=local", "scops=api:read"}, unknown: "scops"},
		{what: "keys/rotate", args: []string{"write", "oauth/keys/rotate", "forse=true"}, unknown: "forse"},
		{what: "tidy", args: []string{"write", "oauth/tidy", "now=true"}, unknown: "now"},
		// Deletes. A delete with a misspelled force= does an ordinary
		// delete (revokes upstream first, or is refused); the operator must
		// learn that the option was not understood. Vault adds the warning
		// to a delete's response as to any other, if the engine returns one.
		{
			what: "role delete", args: []string{"delete", "oauth/roles/r", "forse=true"}, unknown: "forse",
			after: func(t *testing.T) { gone(t, "oauth/roles/r") },
		},
		{
			what: "grant delete", args: []string{"delete", "oauth/grants/g2", "forse=true"}, unknown: "forse",
			after: func(t *testing.T) { gone(t, "oauth/grants/g2") },
		},
		{
			what: "provider delete", args: []string{"delete", "oauth/providers/p", "forse=true"}, unknown: "forse",
			after: func(t *testing.T) { gone(t, "oauth/providers/p") },
		},
	}

	var failed []string
	for _, s := range steps {
		ok := t.Run(strings.ReplaceAll(s.what, " ", "_"), func(t *testing.T) {
			out, code := vaultCLIOutput(t, v, home, s.stdin, s.args...)
			t.Logf("$ vault %s  (exit %d)\n%s", strings.Join(s.args, " "), code, strings.TrimSpace(out))
			if code != 0 {
				t.Fatalf("vault %s exited %d:\n%s", strings.Join(s.args, " "), code, out)
			}
			if !strings.Contains(out, unknownFieldWarning) || !strings.Contains(out, s.unknown) {
				t.Errorf("vault %s: the CLI output does not warn that %q was ignored (want %q naming it):\n%s",
					strings.Join(s.args, " "), s.unknown, unknownFieldWarning, out)
			}
			if s.after != nil {
				s.after(t)
			}
		})
		if !ok {
			failed = append(failed, s.what)
		}
	}

	// -format=json carries the warning too (scripts read it).
	out, code := vaultCLIOutput(t, v, home, "", "write", "-format=json", "oauth/roles/r2", "grant=g", "scoops=api:read")
	var js struct {
		Warnings []string `json:"warnings"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &js) != nil || !strings.Contains(strings.Join(js.Warnings, "\n"), "scoops") {
		t.Errorf("vault write -format=json with an unknown field: exit %d, warnings %q, output:\n%s", code, js.Warnings, out)
	}
	t.Logf("%d CLI steps, %d without the warning %v; took %s", len(steps), len(failed), failed, time.Since(start).Round(time.Millisecond))
}
