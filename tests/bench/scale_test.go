package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// scaleResult is row 7 at one grant count.
type scaleResult struct {
	grants         int
	importPerSec   float64
	rssBytes       int64
	listTime       time.Duration
	sweepCPU       time.Duration
	idleCalls      int
	rotateTime     time.Duration
	rotateResealed any
	filtered       []filteredList
}

// filteredList is one filtered LIST grants at a grant count.
type filteredList struct {
	query   string
	matched int
	took    time.Duration
}

// listFilters are the LIST grants filters row 7b times: answered from the
// grant index, they cost about the same whatever they match.
func listFilters() []string {
	return []string{"status=active", "status=invalid", "provider=local", "owner_entity_id=nobody", "unused_for=1s", "unused_for=720h",
		"provider=local&status=active&unused_for=1s"}
}

// listGrantsWith times LIST grants with a filter through the HTTP API.
func (s *suite) listGrantsWith(query string) (int, time.Duration) {
	req, _ := http.NewRequest(http.MethodGet, s.v.Addr+"/v1/oauth/grants?list=true&"+query, nil)
	req.Header.Set("X-Vault-Token", s.v.Token)
	start := time.Now()
	resp, err := s.http.Do(req)
	if err != nil {
		s.b.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Keys []string `json:"keys"`
		} `json:"data"`
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
		s.b.Fatalf("LIST grants?%s: HTTP %d", query, resp.StatusCode)
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return len(body.Data.Keys), time.Since(start)
}

// scale grows the mount to n grants and measures what idle grants cost.
func (s *suite) scale(n int) {
	res := scaleResult{grants: n}
	add := n - s.grants
	s.logf("scale %d: minting %d refresh tokens upstream", n, add)
	tokens := s.mintMany(add)

	// Import in `runs` equal chunks; the rate is the median chunk's.
	var rates []float64
	chunk := (add + runs - 1) / runs
	for i := 0; i < runs; i++ {
		part := tokens[min(i*chunk, add):min((i+1)*chunk, add)]
		start := time.Now()
		s.importMany(part, s.grants)
		s.grants += len(part)
		rates = append(rates, float64(len(part))/time.Since(start).Seconds())
	}
	res.importPerSec = median(rates)
	s.logf("scale %d: imported at %.0f grants/s", n, res.importPerSec)

	res.rssBytes = s.v.PluginRSS(s.b)

	var lists []time.Duration
	for i := 0; i < runs; i++ {
		start := time.Now()
		sec, err := s.client.Logical().List("oauth/grants")
		if err != nil {
			s.b.Fatal(err)
		}
		lists = append(lists, time.Since(start))
		if keys, _ := sec.Data["keys"].([]any); len(keys) < n {
			s.b.Fatalf("LIST grants returned %d keys, want %d", len(keys), n)
		}
	}
	res.listTime = median(lists)
	for _, q := range listFilters() {
		var took []time.Duration
		matched := 0
		for i := 0; i < runs; i++ {
			n, d := s.listGrantsWith(q)
			matched = n
			took = append(took, d)
		}
		res.filtered = append(res.filtered, filteredList{query: q, matched: matched, took: median(took)})
	}

	var sweeps []time.Duration
	for i := 0; i < runs; i++ {
		before := s.v.PluginCPUTime(s.b)
		if _, err := s.client.Logical().Write("oauth/tidy", nil); err != nil {
			s.b.Fatal(err)
		}
		sweeps = append(sweeps, s.v.PluginCPUTime(s.b)-before)
	}
	res.sweepCPU = median(sweeps)

	before := s.upstreamCalls()
	s.logf("scale %d: idle for %s (tidy_interval 10s) counting upstream calls", n, idleWindow)
	time.Sleep(idleWindow)
	res.idleCalls = s.upstreamCalls() - before

	var rotations []time.Duration
	for i := 0; i < runs; i++ {
		start := time.Now()
		sec, err := s.client.Logical().Write("oauth/keys/rotate", nil)
		if err != nil {
			s.b.Fatal(err)
		}
		rotations = append(rotations, time.Since(start))
		res.rotateResealed = sec.Data["grants_resealed"]
	}
	res.rotateTime = median(rotations)
	s.scales = append(s.scales, res)
	s.logf("scale %d: RSS %.1f MiB, LIST %s, idle sweep CPU %s, idle upstream calls %d, keys/rotate %s (%v grants)",
		n, float64(res.rssBytes)/(1<<20), res.listTime.Round(time.Millisecond), res.sweepCPU, res.idleCalls, res.rotateTime.Round(time.Millisecond), res.rotateResealed)
}

// upstreamCalls counts every call the upstream saw that an engine makes.
func (s *suite) upstreamCalls() int {
	st := s.up.Stats(s.b)
	n := len(st.Revocations) + st.Introspections
	for _, c := range st.TokenRequests {
		n += c
	}
	return n
}

func (s *suite) mintMany(n int) []string {
	tokens := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				tokens[i], _ = s.up.Mint(s.b, s.up.ClientID, "offline_access api:read", fmt.Sprintf("scale-%d", i))
			}
		}()
	}
	wg.Wait()
	return tokens
}

func (s *suite) importMany(tokens []string, offset int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := 0; w < importWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(tokens) {
					return
				}
				_, err := s.client.Logical().Write(fmt.Sprintf("oauth/grants/scale-%06d", offset+i), map[string]any{
					// Long-lived: every grant sits in the due index, nothing
					// comes due during the run.
					"provider": "local", "refresh_token": tokens[i], "scopes": "api:read",
					"keep_alive": "12h", "idle_timeout": "720h",
				})
				if err != nil && failed.Add(1) == 1 {
					s.logf("import failed: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		s.b.Fatalf("%d imports failed", failed.Load())
	}
}
