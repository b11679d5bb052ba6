package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// The creds load the failover tests run while nodes step down, restart or
// die: readers, each reading oauth/creds/ROLE in a loop through the nodes
// the test lets them use (round robin), and a record of every read.

const (
	readers    = 8
	readPause  = 20 * time.Millisecond // between two reads of one reader
	readTimout = 20 * time.Second      // client timeout of one read
)

type readResult struct {
	reader     int
	node, role string
	start, end time.Time
	err        error
	class      string // errClass(err), addresses replaced by node names
	// nodeDown: the node the read went to was stopped or killed by the
	// test while the read was under way (or before it started). Such a
	// failure says nothing about the engine.
	nodeDown bool
}

// load runs readers until stop.
type load struct {
	t *testing.T
	c *harness.Cluster

	mu      sync.Mutex
	targets []*harness.ClusterNode // nodes readers may use
	gen     map[*harness.ClusterNode]int
	results []readResult

	stopCh chan struct{}
	wg     sync.WaitGroup
	start  time.Time
	names  *strings.Replacer // 127.0.0.1:PORT -> node name
}

// startLoad starts one reader per entry of roles; reader i reads the roles
// roles[i] in turn, through targets (round robin).
func startLoad(t *testing.T, c *harness.Cluster, targets []*harness.ClusterNode, roles [][]string) *load {
	t.Helper()
	l := &load{t: t, c: c, targets: append([]*harness.ClusterNode(nil), targets...),
		gen: map[*harness.ClusterNode]int{}, stopCh: make(chan struct{}), start: time.Now()}
	var pairs []string
	for _, n := range c.Nodes {
		pairs = append(pairs, strings.TrimPrefix(n.Addr, "http://"), n.Name+"(api)",
			strings.TrimPrefix(n.ClusterAddr, "https://"), n.Name+"(cluster)")
	}
	l.names = strings.NewReplacer(pairs...)
	clients := map[*harness.ClusterNode][]*api.Client{}
	for _, n := range c.Nodes {
		for range roles {
			clients[n] = append(clients[n], n.NewClient(t, readTimout))
		}
	}
	for i, rs := range roles {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for k := 0; ; k++ {
				select {
				case <-l.stopCh:
					return
				default:
				}
				node, gen := l.pick(i + k)
				if node == nil {
					time.Sleep(readPause)
					continue
				}
				role := rs[k%len(rs)]
				r := readResult{reader: i, node: node.Name, role: role, start: time.Now()}
				_, err := readCreds(clients[node][i], role)
				r.end, r.err = time.Now(), err
				if err != nil {
					r.class = errClass(err, l.names)
				}
				l.mu.Lock()
				r.nodeDown = l.gen[node] != gen || !l.isTarget(node)
				l.results = append(l.results, r)
				l.mu.Unlock()
				time.Sleep(readPause)
			}
		}()
	}
	t.Cleanup(l.stop)
	return l
}

// readCreds reads oauth/creds/ROLE once. Any answer but a secret with an
// access token is an error that carries the HTTP status.
func readCreds(client *api.Client, role string) (*api.Secret, error) {
	resp, err := client.Logical().ReadRaw("oauth/creds/" + role)
	if err != nil {
		return nil, err // transport error
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("HTTP %d: reading the body: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Errors []string `json:"errors"`
		}
		_ = json.Unmarshal(body, &e)
		if len(e.Errors) == 0 {
			e.Errors = []string{fmt.Sprintf("(no errors; body %q)", truncate(string(body), 200))}
		}
		return nil, &api.ResponseError{HTTPMethod: http.MethodGet, URL: resp.Request.URL.String(), StatusCode: resp.StatusCode, Errors: e.Errors}
	}
	s, err := api.ParseSecret(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("HTTP 200: parsing the secret: %w", err)
	}
	if s == nil || s.Data["access_token"] == nil || s.Data["access_token"] == "" {
		return nil, fmt.Errorf("HTTP 200 without an access_token: %s", truncate(string(body), 200))
	}
	return s, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func (l *load) pick(k int) (*harness.ClusterNode, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.targets) == 0 {
		return nil, 0
	}
	n := l.targets[k%len(l.targets)]
	return n, l.gen[n]
}

func (l *load) isTarget(n *harness.ClusterNode) bool {
	for _, x := range l.targets {
		if x == n {
			return true
		}
	}
	return false
}

// markDown takes n out of the readers' rotation before the test stops or
// kills it; reads under way to it are then counted as nodeDown.
func (l *load) markDown(n *harness.ClusterNode) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gen[n]++
	var keep []*harness.ClusterNode
	for _, x := range l.targets {
		if x != n {
			keep = append(keep, x)
		}
	}
	l.targets = keep
}

// markUp puts n back into the rotation.
func (l *load) markUp(n *harness.ClusterNode) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.isTarget(n) {
		l.targets = append(l.targets, n)
	}
}

func (l *load) stop() {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	l.wg.Wait()
}

// snapshot returns the reads so far.
func (l *load) snapshot() []readResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]readResult(nil), l.results...)
}

// waitReads waits until n more reads succeeded than at the call, or up
// to timeout, so that a phase of a test lasts for some reads rather than
// for some time.
func (l *load) waitReads(n int, timeout time.Duration) {
	count := func() int {
		ok := 0
		for _, r := range l.snapshot() {
			if r.err == nil {
				ok++
			}
		}
		return ok
	}
	want := count() + n
	deadline := time.Now().Add(timeout)
	for count() < want && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
}

// readStats sums up reads between from and to (by start time; zero to:
// until the end).
type readStats struct {
	reads, ok, failed, nodeDown int
	firstFail, lastFail         time.Time
	errs                        map[string]int
	// failedAfter: engine-relevant failed reads that started after the
	// "after" time given to summarize.
	failedAfter []readResult
}

func summarize(rs []readResult, from, to, after time.Time, ignore func(readResult) bool) readStats {
	s := readStats{errs: map[string]int{}}
	for _, r := range rs {
		if r.start.Before(from) || (!to.IsZero() && r.start.After(to)) {
			continue
		}
		s.reads++
		switch {
		case r.err == nil:
			s.ok++
		case r.nodeDown:
			s.nodeDown++
		case ignore != nil && ignore(r):
		default:
			s.failed++
			s.errs[r.class]++
			if s.firstFail.IsZero() || r.start.Before(s.firstFail) {
				s.firstFail = r.start
			}
			if r.end.After(s.lastFail) {
				s.lastFail = r.end
			}
			if !after.IsZero() && r.start.After(after) {
				s.failedAfter = append(s.failedAfter, r)
			}
		}
	}
	return s
}

// window is how long reads failed: from the start of the first failed read
// to the end of the last one (0 if none failed).
func (s readStats) window() time.Duration {
	if s.failed == 0 {
		return 0
	}
	return s.lastFail.Sub(s.firstFail)
}

// errorSummary lists the distinct errors, most frequent first.
func (s readStats) errorSummary() string {
	type kv struct {
		k string
		n int
	}
	var list []kv
	for k, n := range s.errs {
		list = append(list, kv{k, n})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].n > list[j].n || (list[i].n == list[j].n && list[i].k < list[j].k) })
	var b strings.Builder
	for _, e := range list {
		fmt.Fprintf(&b, "\n    %5d × %s", e.n, e.k)
	}
	return b.String()
}

var (
	reAddr  = regexp.MustCompile(`127\.0\.0\.1:\d+`)
	reLease = regexp.MustCompile(`oauth/creds/[a-z0-9-]+`)
)

// errClass reduces an error to a class for counting: HTTP status and the
// first error message, with the nodes' addresses replaced by their names
// (names), other addresses and role names blanked.
func errClass(err error, names *strings.Replacer) string {
	msg := err.Error()
	var re *api.ResponseError
	if errors.As(err, &re) {
		msg = fmt.Sprintf("HTTP %d: %s", re.StatusCode, strings.Join(re.Errors, "; "))
	} else {
		var ue *url.Error
		if errors.As(err, &ue) {
			msg = "transport: " + ue.Err.Error()
		}
	}
	msg = names.Replace(msg)
	msg = reAddr.ReplaceAllString(msg, "127.0.0.1:PORT")
	msg = reLease.ReplaceAllString(msg, "oauth/creds/ROLE")
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	return msg
}

// ---------------------------------------------------------------------------
// Grants

// grant is one engine grant under test and its upstream grant.
type grant struct {
	name, role string
	upstreamID string
	up         *harness.Upstream
	provider   string
}

// newGrants imports n grants named prefix-0... (a single one is named
// prefix) at up through provider, each with a role of the same name.
func newGrants(t *testing.T, c *harness.Cluster, up *harness.Upstream, provider, prefix string, n int) []*grant {
	t.Helper()
	var gs []*grant
	for i := 0; i < n; i++ {
		name := prefix
		if n > 1 {
			name = fmt.Sprintf("%s-%d", prefix, i)
		}
		_, id := c.ImportGrant(t, up, provider, name, "api:read")
		c.MustCLI(t, "write", "oauth/roles/"+name, "grant="+name)
		gs = append(gs, &grant{name: name, role: name, upstreamID: id, up: up, provider: provider})
	}
	return gs
}

func readGrant(t *testing.T, client *api.Client, name string) map[string]any {
	t.Helper()
	s, err := client.Logical().Read("oauth/grants/" + name)
	if err != nil {
		t.Fatalf("read oauth/grants/%s: %v", name, err)
	}
	if s == nil {
		return nil
	}
	return s.Data
}

func jsonInt(v any) int64 {
	switch n := v.(type) {
	case json.Number:
		i, _ := n.Int64()
		return i
	case float64:
		return int64(n)
	case int64:
		return n
	case int:
		return int64(n)
	}
	return 0
}

// grantOutcome is what became of a grant after a failover.
type grantOutcome struct {
	working   bool
	burned    bool // invalid, with the engine's interrupted-refresh error
	status    string
	lastError string
	rotations int64 // engine's rotation_count
	upRot     int   // upstream's successful rotations
	upGrace   int   // upstream's grace reuses
}

// checkGrant reads creds once more for g, then its status in Vault and at
// the upstream. A grant is working when the read succeeds and the upstream
// agrees (its grant exists with one live refresh token); it is burned when
// Vault marked it invalid. Anything else fails the test.
func checkGrant(t *testing.T, client *api.Client, g *grant) grantOutcome {
	t.Helper()
	_, credsErr := client.Logical().Read("oauth/creds/" + g.role)
	stats := g.up.Stats(t)
	d := readGrant(t, client, g.name)
	if d == nil {
		t.Fatalf("grant %s is gone", g.name)
	}
	o := grantOutcome{
		status:    fmt.Sprint(d["status"]),
		lastError: fmt.Sprint(d["last_error"]),
		rotations: jsonInt(d["rotation_count"]),
		upRot:     stats.RotationsByGrant[g.upstreamID],
		upGrace:   stats.GraceReusesByGrant[g.upstreamID],
	}
	up := g.up.Grant(t, g.upstreamID)
	switch {
	case credsErr == nil && o.status == "active":
		o.working = true
		// One live refresh token, plus, at an upstream with a rotation
		// grace period, the successor of each grace reuse, which died
		// unseen with the node that got it.
		if !up.Found || up.ActiveTokens["RefreshToken"] != 1+o.upGrace {
			t.Errorf("grant %s works in Vault, but the upstream's view of grant %s is %+v", g.name, g.upstreamID, up)
		}
		if d["write_pending"] == true {
			t.Errorf("grant %s: write_pending=true after the failover", g.name)
		}
	case o.status == "invalid":
		o.burned = true
	default:
		t.Errorf("grant %s: creds read: %v; status %s, last_error %q", g.name, credsErr, o.status, o.lastError)
	}
	return o
}

// pluginLogLines returns the engine's own WARN and ERROR lines from every
// node's server log (Vault prefixes plugin lines with the mount's logger
// name, secrets.vault-plugin-secrets-oauth...).
func pluginLogLines(t *testing.T, c *harness.Cluster) []string {
	t.Helper()
	var out []string
	for _, n := range c.Nodes {
		data, err := os.ReadFile(n.LogPath)
		if err != nil {
			t.Fatalf("reading %s's log: %v", n.Name, err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "secrets.vault-plugin-secrets-oauth") &&
				(strings.Contains(line, "[ERROR]") || strings.Contains(line, "[WARN]")) {
				out = append(out, n.Name+": "+truncate(line, 400))
			}
		}
	}
	return out
}

// drainLost are the engine's log messages saying a graceful stop may have
// lost a rotated refresh token (backend.clean).
var drainLost = []string{
	"refreshes still in flight after the drain timeout",
	"grants could not be stored before shutdown",
}

// checkPluginLogs logs the engine's warnings and errors and, when graceful,
// fails the test on the ones that say a rotated token may have been lost.
func checkPluginLogs(t *testing.T, c *harness.Cluster, graceful bool) {
	t.Helper()
	lines := pluginLogLines(t, c)
	if len(lines) > 0 {
		t.Logf("the engine logged %d warnings/errors:\n  %s", len(lines), strings.Join(lines, "\n  "))
	}
	if !graceful {
		return
	}
	for _, l := range lines {
		for _, m := range drainLost {
			if strings.Contains(l, m) {
				t.Errorf("graceful stop: %s", l)
			}
		}
	}
}
