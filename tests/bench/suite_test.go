package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/vault-plugin-secrets-oauth/vault-plugin-secrets-oauth/tests/harness"
)

// Settings of one `make bench` run. Every measurement is bounded by
// runTime and by maxRequests, and repeated `runs` times.
const (
	runs          = 3
	maxRequests   = 200_000
	workers       = 16
	accessTTL     = 300 * time.Second
	importWorkers = 16
)

// A full run uses these; BENCH_QUICK=1 shrinks them to check the bench
// itself in a minute (its figures are then not the published ones).
var (
	runTime    = 4 * time.Second
	idleWindow = time.Minute
	scales     = []int{10_000, 100_000}
)

func init() {
	if os.Getenv("BENCH_QUICK") != "" {
		runTime, idleWindow, scales = time.Second, 5*time.Second, []int{500, 2000}
	}
}

// BenchmarkSuite is `make bench`: it starts Vault and the upstream, runs
// every row, prints the table and writes BENCHMARKS.md and the chart.
// Run it once: -benchtime 1x.
func BenchmarkSuite(b *testing.B) {
	if b.N > 1 {
		b.Skip("run with -benchtime 1x")
	}
	s := newSuite(b)
	s.startSampler()
	s.limit()
	s.floor()
	s.credsGrantPerWorker()
	s.credsOneGrant()
	s.credsReuse()
	s.clientCredentialsRevoke()
	s.cluster()
	for _, n := range scales {
		s.scale(n)
	}
	s.report()
}

type suite struct {
	b *testing.B
	v *harness.Vault
	// cpuOf is the Vault whose (and whose plugin's) CPU the rows sample:
	// the dev server, or the active node of the Raft cluster.
	cpuOf   *harness.Vault
	up      *harness.Upstream
	client  *api.Client
	http    *http.Client
	started time.Time

	rows    []row
	targets []target
	scales  []scaleResult
	grants  int // grants imported so far (scale rows)

	metrics *sampler // oauth/metrics scraped through the run (dashboard_test.go)

	oneGrantWorks    bool
	revokeToInactive time.Duration
	reuseCallsMax    int // most upstream refreshes in one token_reuse run
}

// row is one line of the table; figures are medians over runs.
type row struct {
	id, what    string
	concurrency int
	perSecond   float64
	p50, p99    time.Duration
	errors      int64
	note        string
	// CPU time per successful request, by process (medians over runs).
	cpuVault, cpuPlugin, cpuUpstream, cpuClient time.Duration
}

type target struct {
	what   string
	pass   bool
	detail string
}

func newSuite(b *testing.B) *suite {
	s := &suite{b: b, started: time.Now()}
	s.up = harness.StartUpstream(b, harness.UpstreamOptions{AccessTokenTTL: accessTTL})
	s.v = harness.StartVaultWith(b, harness.VaultOptions{NoAudit: true, LogLevel: "warn"})
	s.cpuOf = s.v
	s.client = benchClient(b, s.v)
	s.http = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxIdleConns: 256}}
	s.cli("write", "oauth/config", "tidy_interval=10s")
	s.cli("write", "oauth/providers/local", "issuer="+s.up.URL, "client_id="+s.up.ClientID, "client_secret="+s.up.ClientSecret)
	s.cli("secrets", "enable", "-path=kv", "-version=1", "kv")
	s.cli("write", "kv/floor", "value=x")
	return s
}

// benchClient is a Vault api client whose connection pool holds every
// worker's connection (the default keeps 3 idle ones and churns).
func benchClient(b *testing.B, v *harness.Vault) *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = v.Addr
	cfg.MaxRetries = 0
	cfg.Timeout = 60 * time.Second
	tr := cfg.HttpClient.Transport.(*http.Transport)
	tr.MaxIdleConnsPerHost, tr.MaxIdleConns = 64, 256
	c, err := api.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	c.SetToken(v.Token)
	return c
}

func (s *suite) cli(args ...string) string { return s.v.MustCLI(s.b, args...) }

func (s *suite) logf(format string, args ...any) {
	fmt.Printf("bench [%5.0fs] %s\n", time.Since(s.started).Seconds(), fmt.Sprintf(format, args...))
}

// measure runs op `runs` times and records the median row.
func (s *suite) measure(id, what string, concurrency int, op func(worker int) error, after func(result) string) row {
	var rates []float64
	var p50s, p99s []time.Duration
	var cpu [4][]time.Duration
	var errs int64
	var notes []string
	for i := 0; i < runs; i++ {
		cpuBefore := s.cpuSample()
		r := load{concurrency: concurrency, duration: runTime, maxRequests: maxRequests}.run(op)
		cpuAfter := s.cpuSample()
		for k := range cpu {
			cpu[k] = append(cpu[k], (cpuAfter[k]-cpuBefore[k])/time.Duration(max(r.requests-r.errors, 1)))
		}
		rates = append(rates, r.perSecond())
		p50s = append(p50s, r.percentile(0.50))
		p99s = append(p99s, r.percentile(0.99))
		errs += r.errors
		if r.firstErr != nil {
			s.logf("row %s c=%d run %d: %d errors, first: %v", id, concurrency, i+1, r.errors, r.firstErr)
		}
		if after != nil {
			notes = append(notes, after(r))
		}
		s.clearLeases()
	}
	rw := row{id: id, what: what, concurrency: concurrency, perSecond: median(rates), p50: median(p50s), p99: median(p99s), errors: errs,
		cpuVault: median(cpu[0]), cpuPlugin: median(cpu[1]), cpuUpstream: median(cpu[2]), cpuClient: median(cpu[3])}
	if len(notes) > 0 {
		rw.note = medianNote(notes)
	}
	s.rows = append(s.rows, rw)
	s.logf("row %s c=%-2d %-48s %8.0f/s p50 %-8s p99 %-8s errors %d %s", id, concurrency, what, rw.perSecond, rw.p50.Round(10*time.Microsecond), rw.p99.Round(10*time.Microsecond), errs, rw.note)
	return rw
}

// cpuSample reads the CPU time used so far by Vault, the plugin, the
// upstream and this load generator.
func (s *suite) cpuSample() [4]time.Duration {
	var self syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	return [4]time.Duration{
		harness.ProcessCPUTime(s.b, s.cpuOf.PID()),
		s.cpuOf.PluginCPUTime(s.b),
		harness.ProcessCPUTime(s.b, s.up.PID()),
		time.Duration(self.Utime.Nano() + self.Stime.Nano()),
	}
}

// medianNote keeps the middle one of the runs' notes, which are
// "<number> <text>" and sort by their number.
func medianNote(notes []string) string {
	type n struct {
		v float64
		s string
	}
	var ns []n
	for _, s := range notes {
		var v float64
		fmt.Sscanf(s, "%g", &v)
		ns = append(ns, n{v, s})
	}
	for i := range ns {
		for j := i + 1; j < len(ns); j++ {
			if ns[j].v < ns[i].v {
				ns[i], ns[j] = ns[j], ns[i]
			}
		}
	}
	return ns[(len(ns)-1)/2].s
}

// clearLeases revokes every lease the engine issued, so runs do not pile
// leases up in Vault's expiration manager.
func (s *suite) clearLeases() {
	if _, err := s.client.Logical().Write("sys/leases/revoke-force/oauth/creds", nil); err != nil {
		s.b.Fatalf("clearing leases: %v", err)
	}
}

func (s *suite) find(id string, concurrency int) row {
	for _, r := range s.rows {
		if r.id == id && r.concurrency == concurrency {
			return r
		}
	}
	s.b.Fatalf("no row %s c=%d", id, concurrency)
	return row{}
}

func (s *suite) check(what string, pass bool, format string, args ...any) {
	t := target{what: what, pass: pass, detail: fmt.Sprintf(format, args...)}
	s.targets = append(s.targets, t)
	s.logf("target %-4s %s: %s", passWord(pass), what, t.detail)
}

func passWord(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// --- row 1: the upstream alone -------------------------------------------

func (s *suite) limit() {
	tokenURL := s.up.Endpoint(s.b, "token_endpoint")
	for _, c := range []int{1, workers} {
		chains := make([]string, c)
		for i := range chains {
			chains[i], _ = s.up.Mint(s.b, s.up.ClientID, "offline_access api:read", fmt.Sprintf("limit-%d-%d", c, i))
		}
		var mu sync.Mutex
		s.measure("1", "upstream alone: refresh_token, own rotation chain", c, func(w int) error {
			mu.Lock()
			rt := chains[w]
			mu.Unlock()
			next, err := s.refreshDirect(tokenURL, rt)
			if err != nil {
				return err
			}
			mu.Lock()
			chains[w] = next
			mu.Unlock()
			return nil
		}, nil)
	}
}

// refreshDirect redeems a refresh token at the upstream, as a client with
// no Vault in between would.
func (s *suite) refreshDirect(tokenURL, refreshToken string) (string, error) {
	req, _ := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader(url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}, "scope": {"api:read"},
	}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(s.up.ClientID, s.up.ClientSecret)
	resp, err := s.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("upstream refresh: HTTP %d", resp.StatusCode)
	}
	var tok struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.RefreshToken == "" {
		return "", fmt.Errorf("upstream refresh: no refresh token in response")
	}
	return tok.RefreshToken, nil
}

// --- row 2: Vault's floor -------------------------------------------------

func (s *suite) floor() {
	for _, c := range []int{1, workers} {
		s.measure("2", "Vault floor: KV v1 read", c, func(int) error {
			_, err := s.client.Logical().Read("kv/floor")
			return err
		}, nil)
	}
	// Not a target row: what any request to an external plugin costs in
	// this Vault (gRPC to the plugin process and back, no storage, no
	// upstream), the floor under rows 3-6.
	for _, c := range []int{1, workers} {
		s.measure("2p", "plugin floor: read oauth/config (cached, no storage)", c, func(int) error {
			_, err := s.client.Logical().Read("oauth/config")
			return err
		}, nil)
	}
}

// --- rows 3-5: creds ------------------------------------------------------

func (s *suite) importGrant(name, account string) {
	rt, _ := s.up.Mint(s.b, s.up.ClientID, "offline_access api:read api:write", account)
	if _, err := s.client.Logical().Write("oauth/grants/"+name, map[string]any{
		"provider": "local", "refresh_token": rt, "scopes": "api:read,api:write",
	}); err != nil {
		s.b.Fatal(err)
	}
}

func (s *suite) upstreamRefreshes() int {
	return s.up.Stats(s.b).TokenRequests["refresh_token"]
}

func (s *suite) readCreds(role string) error {
	sec, err := s.client.Logical().Read("oauth/creds/" + role)
	if err != nil {
		return err
	}
	if sec == nil || sec.LeaseID == "" || sec.Data["access_token"] == "" {
		return fmt.Errorf("creds without lease or token")
	}
	return nil
}

// callsPerRead reports upstream refreshes per successful creds read.
func (s *suite) callsPerRead(scale float64, unit string) (func(), func(result) string) {
	var before int
	return func() { before = s.upstreamRefreshes() }, func(r result) string {
		calls := s.upstreamRefreshes() - before
		ok := r.requests - r.errors
		if ok == 0 {
			return "0 " + unit
		}
		return fmt.Sprintf("%.2f %s", float64(calls)*scale/float64(ok), unit)
	}
}

func (s *suite) credsGrantPerWorker() {
	for i := 0; i < workers; i++ {
		s.importGrant(fmt.Sprintf("worker-%d", i), fmt.Sprintf("worker-%d", i))
		s.cli("write", fmt.Sprintf("oauth/roles/worker-%d", i), fmt.Sprintf("grant=worker-%d", i), "scopes=api:read")
	}
	for _, c := range []int{1, workers} {
		start, note := s.callsPerRead(1, "upstream calls/read")
		start()
		s.measure("3", "creds: refresh_token role, one grant per worker", c, func(w int) error {
			return s.readCreds(fmt.Sprintf("worker-%d", w))
		}, func(r result) string { n := note(r); start(); return n })
	}
}

func (s *suite) credsOneGrant() {
	s.importGrant("shared", "shared")
	s.cli("write", "oauth/roles/shared", "grant=shared", "scopes=api:read")
	s.measure("4", "creds: all workers on ONE grant (serialised)", workers, func(int) error {
		return s.readCreds("shared")
	}, nil)
	works := s.readCreds("shared") == nil
	var g map[string]any
	if sec, err := s.client.Logical().Read("oauth/grants/shared"); err == nil && sec != nil {
		g = sec.Data
	}
	s.rows[len(s.rows)-1].note = fmt.Sprintf("grant %v afterwards, rotation_count %v", map[bool]string{true: "works", false: "BROKEN"}[works], g["rotation_count"])
	s.oneGrantWorks = works
}

func (s *suite) credsReuse() {
	s.importGrant("reused", "reused")
	s.cli("write", "oauth/roles/reused", "grant=reused", "scopes=api:read", "token_reuse=true")
	for _, c := range []int{1, workers} {
		before := s.upstreamRefreshes()
		s.measure("5", "creds: token_reuse (a lease per read)", c, func(int) error {
			return s.readCreds("reused")
		}, func(r result) string {
			calls := s.upstreamRefreshes() - before
			before += calls
			s.reuseCallsMax = max(s.reuseCallsMax, calls)
			return fmt.Sprintf("%.2f upstream calls/1000 reads", float64(calls)*1000/float64(max(r.requests-r.errors, 1)))
		})
	}
}

// --- rows 3R and 5R: the same reads on a 3-node Raft cluster --------------

// cluster measures rows 3 and 5 again on three real vault servers with Raft
// storage (the plugin registered in the catalog), against the same
// upstream: what real storage and replication cost. The CPU columns are
// the active node's.
func (s *suite) cluster() {
	c := harness.StartCluster(s.b, harness.ClusterOptions{Upstream: s.up, LogLevel: "warn"})
	active := c.Active(s.b)
	devClient, devCPU := s.client, s.cpuOf
	s.client, s.cpuOf = benchClient(s.b, active.Vault), active.Vault
	defer func() { s.client, s.cpuOf = devClient, devCPU }()
	for i := 0; i < workers; i++ {
		s.importGrant(fmt.Sprintf("worker-%d", i), fmt.Sprintf("raft-worker-%d", i))
		if _, err := s.client.Logical().Write(fmt.Sprintf("oauth/roles/worker-%d", i), map[string]any{"grant": fmt.Sprintf("worker-%d", i), "scopes": "api:read"}); err != nil {
			s.b.Fatal(err)
		}
	}
	for _, c := range []int{1, workers} {
		start, note := s.callsPerRead(1, "upstream calls/read")
		start()
		s.measure("3R", "creds: row 3 on a 3-node Raft cluster", c, func(w int) error {
			return s.readCreds(fmt.Sprintf("worker-%d", w))
		}, func(r result) string { n := note(r); start(); return n })
	}
	s.importGrant("reused", "raft-reused")
	if _, err := s.client.Logical().Write("oauth/roles/reused", map[string]any{"grant": "reused", "scopes": "api:read", "token_reuse": true}); err != nil {
		s.b.Fatal(err)
	}
	for _, c := range []int{1, workers} {
		s.measure("5R", "creds: row 5 (token_reuse) on a 3-node Raft cluster", c, func(int) error {
			return s.readCreds("reused")
		}, nil)
	}
	for _, n := range c.Running() {
		n.Stop(s.b)
	}
}

// --- row 6: client_credentials issue + revoke ----------------------------

func (s *suite) clientCredentialsRevoke() {
	s.cli("write", "oauth/roles/cc", "grant_type=client_credentials", "provider=local", "scopes=api:read")
	var mu sync.Mutex
	var toInactive []time.Duration
	s.measure("6", "client_credentials creds + lease revoke round trip", 1, func(int) error {
		sec, err := s.client.Logical().Read("oauth/creds/cc")
		if err != nil {
			return err
		}
		if _, err := s.client.Logical().Write("sys/leases/revoke", map[string]any{"lease_id": sec.LeaseID, "sync": true}); err != nil {
			return err
		}
		revoked := time.Now()
		token := sec.Data["access_token"].(string)
		for i := 0; ; i++ {
			if s.up.Introspect(s.b, token)["active"] == false {
				break
			}
			if i > 1000 {
				return fmt.Errorf("token still active 1000 polls after revoke")
			}
		}
		mu.Lock()
		toInactive = append(toInactive, time.Since(revoked))
		mu.Unlock()
		return nil
	}, nil)
	sorted := append([]time.Duration(nil), toInactive...)
	s.revokeToInactive = median(sorted)
	s.rows[len(s.rows)-1].note = fmt.Sprintf("revoke-to-inactive p50 %s (n=%d, includes one introspection call)", s.revokeToInactive.Round(10*time.Microsecond), len(sorted))
}

// --- report ---------------------------------------------------------------

func (s *suite) machine() string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.SplitN(string(data), "\n", 2)[0], "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf(", %.0f GiB RAM", float64(kb)/1024/1024)
	}
	return fmt.Sprintf("%d cores (%s)%s, %s/%s", runtime.NumCPU(), cpu, mem, runtime.GOOS, runtime.GOARCH)
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}
