package harness

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
)

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

// ---------------------------------------------------------------------------
// Secret leak checks

// AssertNoSecretsInLogs fails the test if any of secrets appears verbatim in
// the Vault server log or the audit log. The failure names the file and the
// secret by index (secret #0, #1, ...) and length, never its value.
func AssertNoSecretsInLogs(t testing.TB, v *Vault, secrets ...string) {
	t.Helper()
	named := make(map[string]string, len(secrets))
	for i, s := range secrets {
		named[fmt.Sprintf("secret #%d", i)] = s
	}
	AssertNoNamedSecretsInLogs(t, v, named)
}

// AssertNoNamedSecretsInLogs is AssertNoSecretsInLogs with labels, e.g.
// {"refresh token": rt, "client secret": up.ClientSecret}.
func AssertNoNamedSecretsInLogs(t testing.TB, v *Vault, secrets map[string]string) {
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
			t.Errorf("AssertNoSecretsInLogs: %s is empty or shorter than 4 bytes; refusing to search for it", l)
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(f.path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && f.path == v.AuditLogPath {
				continue // audit device not enabled (VaultOptions.NoAudit)
			}
			t.Errorf("AssertNoSecretsInLogs: reading %s: %v", f.label, err)
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
