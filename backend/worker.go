package backend

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// backgroundWorker runs the lifecycle sweep: every tidy_interval, sooner
// when a queued retry is due or when woken. It does no work on nodes that
// cannot write. Everything the engine does without a request is here.
type backgroundWorker struct {
	b      *backend
	wakeCh chan struct{}

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	running sync.Mutex // one sweep at a time (background or tidy)
	last    tidyStatus
}

// tidyStatus describes the last sweep.
type tidyStatus struct {
	StartedAt   time.Time     `json:"started_at"`
	Duration    time.Duration `json:"duration"`
	Queued      int           `json:"queued"`
	Attempted   int           `json:"attempted"`
	Revoked     int           `json:"revoked"`
	Failed      int           `json:"failed"`
	DueChecked  int           `json:"due_checked"`
	Unsaved     int           `json:"unsaved"`
	Replaced    int           `json:"replaced"`
	NextDue     time.Time     `json:"next_due,omitempty"`
	LastError   string        `json:"last_error,omitempty"`
	SweepsTotal int64         `json:"sweeps_total"`
}

func newBackgroundWorker(b *backend) *backgroundWorker {
	return &backgroundWorker{b: b, wakeCh: make(chan struct{}, 1)}
}

func (w *backgroundWorker) start(s logical.Storage) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan struct{})
	go w.loop(ctx, s, w.done)
}

func (w *backgroundWorker) stop() {
	w.mu.Lock()
	cancel, done := w.cancel, w.done
	w.cancel, w.done = nil, nil
	w.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// wake asks for a sweep now.
func (w *backgroundWorker) wake() {
	select {
	case w.wakeCh <- struct{}{}:
	default:
	}
}

func (w *backgroundWorker) lastStatus() tidyStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// unsavedRetry is how soon the sweep comes back while a grant is unsaved.
const unsavedRetry = 2 * time.Second

func (w *backgroundWorker) loop(ctx context.Context, s logical.Storage, done chan struct{}) {
	defer close(done)
	timer := time.NewTimer(time.Second)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-w.wakeCh:
		}
		next := w.interval(ctx, s)
		if w.b.writesAllowed() {
			status := w.sweep(ctx, s)
			if !status.NextDue.IsZero() {
				if d := time.Until(status.NextDue); d < next {
					next = max(d, 100*time.Millisecond)
				}
			}
			if status.Unsaved > 0 {
				next = min(next, unsavedRetry)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

func (w *backgroundWorker) interval(ctx context.Context, s logical.Storage) time.Duration {
	cfg, err := w.b.mountConfig(ctx, s)
	if err != nil {
		return defaultTidyInterval
	}
	return cfg.TidyInterval
}

// sweep does the lifecycle work that is due: unsaved grants are stored,
// grants whose max_age, idle_timeout or keep_alive has come (from the due
// index) are handled, pending flows are polled or ended, and queued
// upstream revocations are retried. It reads only the indexes and queues,
// never every grant, so an idle mount costs a couple of Lists.
func (w *backgroundWorker) sweep(ctx context.Context, s logical.Storage) tidyStatus {
	w.running.Lock()
	defer w.running.Unlock()
	st := tidyStatus{StartedAt: w.b.now().UTC()}
	defer func() {
		st.Duration = time.Since(st.StartedAt)
		w.b.metrics.sweeps.inc()
		w.b.metrics.sweepSeconds.add(st.Duration.Seconds())
		for kind, n := range map[string]int{"due": st.DueChecked, "revocations": st.Attempted, "replaced": st.Replaced, "unsaved": st.Unsaved} {
			if n > 0 {
				w.b.metrics.sweepItems.add(float64(n), kind)
			}
		}
		w.mu.Lock()
		st.SweepsTotal = w.last.SweepsTotal + 1
		w.last = st
		w.mu.Unlock()
	}()

	st.Unsaved = w.b.flushUnsaved(ctx, s)
	st.NextDue = earliest(w.sweepDue(ctx, s, &st), w.sweepPending(ctx, s, &st))
	st.NextDue = earliest(st.NextDue, w.sweepReplaced(ctx, s, &st))

	names, err := s.List(ctx, revokingPrefix)
	if err != nil {
		st.LastError = err.Error()
		return st
	}
	st.Queued = len(names)
	interval := w.interval(ctx, s)
	for _, name := range names {
		if ctx.Err() != nil {
			break
		}
		next, attempted, err := w.retryRevocation(ctx, s, name, interval)
		if attempted {
			st.Attempted++
			if err != nil {
				st.Failed++
				st.LastError = err.Error()
			} else {
				st.Revoked++
			}
		}
		st.NextDue = earliest(st.NextDue, next)
	}
	return st
}

// retryRevocation makes one attempt at a queued revocation if it is due and
// returns when the next attempt is due (zero when done).
func (w *backgroundWorker) retryRevocation(ctx context.Context, s logical.Storage, name string, interval time.Duration) (time.Time, bool, error) {
	b := w.b
	unlock := b.lockGrant(name)
	defer unlock()

	m, err := getRevocationMarker(ctx, s, name)
	if err != nil || m == nil {
		return time.Time{}, false, err
	}
	if b.now().Before(m.NextAttempt) {
		return m.NextAttempt, false, nil
	}
	g, err := b.loadGrantLocked(ctx, s, name)
	if err != nil {
		return time.Time{}, false, err
	}
	nothingLeft := g == nil || (g.Status != statusRevoking && g.Status != statusExpired) ||
		(g.RefreshToken.isZero() && !g.EraseAfterRevoke)
	if nothingLeft {
		return time.Time{}, false, s.Delete(ctx, revokingPath(name))
	}
	if _, err := b.revokeGrantUpstream(ctx, s, g); err != nil {
		m.Attempts++
		m.NextAttempt = b.now().Add(retryBackoff(m.Attempts, interval)).UTC()
		if perr := putJSON(ctx, s, revokingPath(name), m); perr != nil {
			return time.Time{}, true, perr
		}
		b.logger.Debug("upstream revocation failed; will retry", "grant", name, "attempts", m.Attempts, "error", err)
		return m.NextAttempt, true, err
	}
	return time.Time{}, true, nil
}

// retryBackoff doubles from one second up to the sweep interval.
func retryBackoff(attempts int, ceiling time.Duration) time.Duration {
	d := time.Second << min(attempts-1, 16)
	return min(d, ceiling)
}

// sweepDue handles every due entry whose minute has come and returns when
// the next one is due (zero if none is scheduled).
func (w *backgroundWorker) sweepDue(ctx context.Context, s logical.Storage, st *tidyStatus) time.Time {
	minutes, err := s.List(ctx, duePrefix)
	if err != nil {
		st.LastError = err.Error()
		return time.Time{}
	}
	sort.Strings(minutes)
	current := dueMinute(w.b.now())
	var nextDue time.Time
	for _, m := range minutes {
		minute := strings.TrimSuffix(m, "/")
		if minute > current {
			var start int64
			fmt.Sscanf(minute, "%d", &start)
			nextDue = earliest(nextDue, time.Unix(start*60, 0))
			break
		}
		names, err := s.List(ctx, duePrefix+m)
		if err != nil {
			st.LastError = err.Error()
			continue
		}
		for _, name := range names {
			if ctx.Err() != nil {
				return nextDue
			}
			next, err := w.handleDue(ctx, s, duePrefix+m+name, name)
			st.DueChecked++
			if err != nil {
				st.LastError = err.Error()
			}
			if !next.IsZero() && dueMinute(next) <= current {
				nextDue = earliest(nextDue, next)
			}
		}
	}
	return nextDue
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// handleDue does a grant's background work if it is due: expire it
// (max_age, idle_timeout) or refresh it (keep_alive). It returns when the
// grant next needs a check.
func (w *backgroundWorker) handleDue(ctx context.Context, s logical.Storage, entryPath, name string) (time.Time, error) {
	b := w.b
	unlock := b.lockGrant(name)
	g, err := b.loadGrantLocked(ctx, s, name)
	if err != nil {
		unlock()
		return time.Time{}, err
	}
	if g != nil && g.Status == statusPending && duePath(g.DueAt, name) == entryPath {
		if !b.now().Before(g.PendingUntil) {
			g.markInvalid("its authorization ended without completing; start it again")
			err = b.saveGrantLocked(ctx, s, g)
		}
		unlock()
		if err != nil {
			return time.Time{}, err
		}
		return g.DueAt, s.Delete(ctx, entryPath)
	}
	if g == nil || duePath(g.DueAt, name) != entryPath || g.Status != statusActive {
		// Stale: the grant is gone, was scheduled again, or is no longer
		// active. Only the entry it points to stays.
		unlock()
		return time.Time{}, s.Delete(ctx, entryPath)
	}
	now := b.now()
	if why := g.lapsed(now); why != "" {
		// On failure the entry stays and the next sweep tries again.
		err := b.expireGrantLocked(ctx, s, g, why)
		if err == nil {
			err = s.Delete(ctx, entryPath)
		}
		unlock()
		return time.Time{}, err
	}
	refresh := g.KeepAlive > 0 && !now.Before(orCreated(g.LastRefreshAt, g).Add(g.KeepAlive))
	if renew := g.renewDue(); !renew.IsZero() && !now.Before(renew) {
		refresh = true
	}
	provider := g.Provider
	unlock()

	if refresh {
		err := b.keepAlive(ctx, s, name)
		b.metrics.keepAlives.inc(provider, map[bool]string{true: "success", false: "failed"}[err == nil])
		if err != nil {
			b.logger.Warn("keep_alive refresh failed; will retry", "grant", name, "error", err)
			return w.retryDue(ctx, s, name, entryPath)
		}
	}
	return w.reschedule(ctx, s, name)
}

func (w *backgroundWorker) reschedule(ctx context.Context, s logical.Storage, name string) (time.Time, error) {
	g, err := w.b.updateGrant(ctx, s, name, func(g *grantEntry) error {
		g.DueAt = time.Time{} // the entry that fired is used up
		return nil
	})
	if isNoGrant(err) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	return g.DueAt, nil
}

// retryDue moves a failed keep_alive a minute on; the grant itself is left
// as the refresh left it (invalid only on invalid_grant).
func (w *backgroundWorker) retryDue(ctx context.Context, s logical.Storage, name, entryPath string) (time.Time, error) {
	b := w.b
	unlock := b.lockGrant(name)
	defer unlock()
	g, err := b.loadGrantLocked(ctx, s, name)
	if err != nil || g == nil || g.Status != statusActive {
		return time.Time{}, err
	}
	retry := b.now().Add(time.Minute)
	if err := putDueEntry(ctx, s, retry, name); err != nil {
		return time.Time{}, err
	}
	g.DueAt = retry
	if err := b.storeGrant(ctx, s, g); err != nil {
		return time.Time{}, err
	}
	if duePath(retry, name) != entryPath {
		return retry, s.Delete(ctx, entryPath)
	}
	return retry, nil
}

// sweepPending ends flows that ran out of time and polls device flows that
// are due; it returns when the next poll is due.
func (w *backgroundWorker) sweepPending(ctx context.Context, s logical.Storage, st *tidyStatus) time.Time {
	b := w.b
	keys, err := s.List(ctx, pendingPrefix)
	if err != nil {
		st.LastError = err.Error()
		return time.Time{}
	}
	var next time.Time
	for _, key := range keys {
		if ctx.Err() != nil {
			break
		}
		next = earliest(next, b.advancePending(ctx, s, key))
	}
	return next
}

// inflight counts refreshes under way, so that Cleanup (a step-down or a
// plugin reload) waits for them to store what they got before the process
// goes: a rotated refresh token must not die with it.
type inflight struct {
	mu      sync.Mutex
	n       int
	closed  bool
	drained chan struct{}
}

func (f *inflight) begin() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.n++
	return true
}

func (f *inflight) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.closed && f.n == 0 && f.drained != nil {
		close(f.drained)
		f.drained = nil
	}
}

// drain refuses new refreshes and waits up to timeout for those in flight.
func (f *inflight) drain(timeout time.Duration) bool {
	f.mu.Lock()
	f.closed = true
	if f.n == 0 {
		f.mu.Unlock()
		return true
	}
	ch := make(chan struct{})
	f.drained = ch
	f.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-time.After(timeout):
		return false
	}
}

// sweepReplaced revokes refresh tokens that a re-authorization or
// re-import replaced; it returns when the next retry is due.
func (w *backgroundWorker) sweepReplaced(ctx context.Context, s logical.Storage, st *tidyStatus) time.Time {
	keys, err := listAll(ctx, s, replacedPrefix)
	if err != nil {
		st.LastError = err.Error()
		return time.Time{}
	}
	st.Replaced = len(keys)
	var next time.Time
	interval := w.interval(ctx, s)
	for _, key := range keys {
		if ctx.Err() != nil {
			break
		}
		n, err := w.b.revokeReplaced(ctx, s, key, interval)
		if err != nil {
			st.LastError = err.Error()
		}
		next = earliest(next, n)
	}
	return next
}
