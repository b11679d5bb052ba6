// Package bench measures the engine against the upstream's own limit and
// Vault's floor. `make bench` runs BenchmarkSuite; see BENCHMARKS.md.
package bench

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// load is one bounded measurement: concurrency workers call op until the
// duration or the request budget runs out, whichever comes first.
type load struct {
	concurrency int
	duration    time.Duration
	maxRequests int64
}

// result is what one measurement saw.
type result struct {
	requests  int64
	errors    int64
	elapsed   time.Duration
	latencies []time.Duration // successful requests only
	firstErr  error
}

func (r result) perSecond() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.requests-r.errors) / r.elapsed.Seconds()
}

func (r result) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	i := int(float64(len(r.latencies)-1) * p)
	return r.latencies[i]
}

// run executes op on l.concurrency workers; op gets the worker's index.
func (l load) run(op func(worker int) error) result {
	ctx, cancel := context.WithTimeout(context.Background(), l.duration)
	defer cancel()
	var issued, failed atomic.Int64
	var mu sync.Mutex
	var all []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < l.concurrency; w++ {
		wg.Add(1)
		go func(worker int) {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			for ctx.Err() == nil {
				if l.maxRequests > 0 && issued.Add(1) > l.maxRequests {
					break
				} else if l.maxRequests == 0 {
					issued.Add(1)
				}
				t0 := time.Now()
				err := op(worker)
				if err != nil {
					failed.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	done := int64(len(all)) + failed.Load()
	return result{requests: done, errors: failed.Load(), elapsed: elapsed, latencies: all, firstErr: firstErr}
}

// median returns the middle value of xs (the lower middle for even counts).
func median[T int64 | float64 | time.Duration](xs []T) T {
	s := append([]T(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)/2]
}
