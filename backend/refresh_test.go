package backend

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestConcurrentCredsOnOneGrantNeverBurnIt(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read write"), "scopes": "read,write"})
	env.mustWrite("roles/r", map[string]any{"grant": "g", "scopes": "read"})

	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := env.creds("r")
			if err == nil && resp.IsError() {
				err = resp.Error()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent creds read failed: %v", err)
		}
	}
	g := env.grant("g")
	if g["status"] != statusActive || g["rotation_count"].(int64) != n || g["refresh_count"].(int64) != n {
		t.Fatalf("grant after %d reads: %v", n, g)
	}
	if env.up.refreshes != n {
		t.Fatalf("upstream saw %d refreshes, want %d", env.up.refreshes, n)
	}
	if g["active_leases"].(int64) != n {
		t.Fatalf("active_leases = %v", g["active_leases"])
	}
}

func TestUpstreamErrorsMapAndOnlyInvalidGrantKills(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read"), "scopes": "read"})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})

	for _, tc := range []struct {
		code   string
		status int
		want   int
	}{
		{"", 503, http.StatusBadGateway},
		{"", 429, http.StatusTooManyRequests},
		{"invalid_client", 400, http.StatusBadGateway},
		{"invalid_scope", 400, http.StatusBadRequest},
	} {
		env.up.fail(tc.code, tc.status)
		_, err := env.creds("r")
		if statusOf(err) != tc.want {
			t.Fatalf("upstream %d %s: got %v (status %d), want %d", tc.status, tc.code, err, statusOf(err), tc.want)
		}
		if g := env.grant("g"); g["status"] != statusActive || !nonEmpty(g["last_error"]) {
			t.Fatalf("after %d %s the grant is %v", tc.status, tc.code, g)
		}
	}
	if _, err := env.creds("r"); err != nil {
		t.Fatalf("grant does not work after transient errors: %v", err)
	}
	env.up.fail("invalid_grant", 400)
	_, err := env.creds("r")
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "re-authorization") {
		t.Fatalf("invalid_grant: %v", err)
	}
	if g := env.grant("g"); g["status"] != statusInvalid {
		t.Fatalf("grant = %v", g)
	}
	if _, err := env.creds("r"); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("invalid grant still issues: %v", err)
	}
}

// failRotatedGrant fails every write of grant g that records a rotation:
// storage breaking right after the upstream rotated the token.
func failRotatedGrant(key string, value []byte) error {
	if key == "grants/g" && !bytes.Contains(value, []byte(`"rotation_count":0`)) {
		return errInjected
	}
	return nil
}

// A storage fault after the upstream rotated the refresh token used to
// drop the new token: the next refresh replayed the old one and a
// reuse-detecting upstream killed the grant.
func TestStorageFaultAfterRotationKeepsTheNewToken(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	env.storage.setFailPut(failRotatedGrant)
	if _, err := env.creds("r"); err == nil {
		t.Fatal("creds succeeded although the rotated grant could not be stored")
	}
	if g := env.grant("g"); g["write_pending"] != true {
		t.Fatalf("grant read does not show the pending write: %v", g)
	}
	// Storage is still down: the next refresh uses the token in memory.
	if _, err := env.creds("r"); err == nil {
		t.Fatal("creds succeeded while storage fails")
	}
	env.storage.setFailPut(nil)
	if _, err := env.creds("r"); err != nil {
		t.Fatalf("creds after storage came back: %v", err)
	}
	if !env.up.grantAlive("g1") {
		t.Fatal("the upstream grant died: an old refresh token was replayed")
	}
	if g := env.grant("g"); g["write_pending"] != false || g["status"] != statusActive || g["rotation_count"].(int64) != 2 || g["active_leases"].(int64) != 1 {
		t.Fatalf("grant after recovery = %v", g)
	}
}

// The background worker keeps retrying an unsaved grant's write.
func TestUnsavedGrantIsStoredByTheWorker(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	env.storage.setFailPut(failRotatedGrant)
	if _, err := env.creds("r"); err == nil {
		t.Fatal("creds succeeded although the rotated grant could not be stored")
	}
	if st := env.sweep(); st.Unsaved != 1 {
		t.Fatalf("sweep while storage fails: %+v", st)
	}
	env.storage.setFailPut(nil)
	if st := env.sweep(); st.Unsaved != 0 {
		t.Fatalf("sweep after storage came back: %+v", st)
	}
	if g := env.storedGrant("g"); g.RotationCount != 1 {
		t.Fatalf("stored grant = %+v", g)
	}
	if _, err := env.creds("r"); err != nil || !env.up.grantAlive("g1") {
		t.Fatalf("creds after the worker stored the grant: %v", err)
	}
}

// markRefreshStarted leaves the in-flight mark a node that died mid-refresh
// leaves behind.
func markRefreshStarted(t *testing.T, env *testEnv, name string) {
	t.Helper()
	g := env.storedGrant(name)
	g.RefreshStartedAt = env.b.now().UTC()
	if err := env.b.storeGrant(context.Background(), env.storage, g); err != nil {
		t.Fatal(err)
	}
}

// A node that died after sending the refresh token left a stored token the
// upstream had already rotated away; the next refresh must say so.
func TestInterruptedRefreshIsNamedInLastError(t *testing.T) {
	env := newTestEnv(t)
	rt := env.up.mint("read")
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": rt})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	// The dying node: marked the refresh, sent the token, never stored
	// the answer.
	markRefreshStarted(t, env, "g")
	env.up.refreshDirect(rt)

	_, err := env.creds("r")
	if statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("creds after an interrupted refresh: %v", err)
	}
	got := env.grant("g")
	msg, _ := got["last_error"].(string)
	for _, want := range []string{"interrupted", "re-authorize", "grace period"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("last_error %q does not say %q", msg, want)
		}
	}
	if got["status"] != statusInvalid {
		t.Fatalf("grant = %v", got)
	}
}

// A refresh that was interrupted but whose token still works (a grace
// period, or the node died before sending) goes on as normal.
func TestInterruptedRefreshRetriesTheStoredToken(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	markRefreshStarted(t, env, "g")
	if _, err := env.creds("r"); err != nil {
		t.Fatal(err)
	}
	if g := env.storedGrant("g"); !g.RefreshStartedAt.IsZero() || g.Status != statusActive {
		t.Fatalf("grant after the retried refresh = %+v", g)
	}
}

// Cleanup (step-down, plugin reload) waits for a refresh in flight to
// store its rotated token before the process may go.
func TestCleanupDrainsRefreshesInFlight(t *testing.T) {
	env := newTestEnv(t)
	env.mustWrite("grants/g", map[string]any{"provider": "up", "refresh_token": env.up.mint("read")})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	gate := make(chan struct{})
	env.up.set(func(f *fakeUpstream) { f.gate = gate })
	done := make(chan error, 1)
	go func() {
		_, err := env.creds("r")
		done <- err
	}()
	// Wait until the refresh is in flight (its mark is stored).
	eventuallyTrue(t, func() bool { return !env.storedGrant("g").RefreshStartedAt.IsZero() })
	cleaned := make(chan struct{})
	go func() {
		env.b.Cleanup(context.Background())
		close(cleaned)
	}()
	select {
	case <-cleaned:
		t.Fatal("Cleanup returned while a refresh was in flight")
	case <-time.After(200 * time.Millisecond):
	}
	close(gate)
	<-cleaned
	if g := env.storedGrant("g"); g.RotationCount != 1 || !g.RefreshStartedAt.IsZero() {
		t.Fatalf("Cleanup returned before the rotation was stored: %+v", g)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// After Cleanup, no new refresh starts.
	if _, err := env.creds("r"); statusOf(err) != http.StatusServiceUnavailable {
		t.Fatalf("creds after Cleanup: %v", err)
	}
}

// GitHub and Slack answer a dead refresh token with HTTP 200 and an error
// body: that is invalid_grant, not a retryable upstream fault.
func TestInvalidGrantInA200BodyMarksTheGrantInvalid(t *testing.T) {
	env := newTestEnv(t)
	odd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"error":"invalid_grant","error_description":"The refresh token is invalid"}`))
	}))
	t.Cleanup(odd.Close)
	env.mustWrite("providers/odd", map[string]any{"token_url": odd.URL, "client_id": "c", "client_secret": "s"})
	env.mustWrite("grants/g", map[string]any{"provider": "odd", "refresh_token": "rt-dead-token-value"})
	env.mustWrite("roles/r", map[string]any{"grant": "g"})
	if _, err := env.creds("r"); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("creds: %v", err)
	}
	if g := env.grant("g"); g["status"] != statusInvalid {
		t.Fatalf("grant = %v", g)
	}
}
