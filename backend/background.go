package backend

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// backgroundWorker runs the lifecycle sweep: every tidy_interval, sooner
// when a queued retry is due or when woken. It does no work on nodes that
// cannot write.
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

// sweep does the lifecycle work that is due: grants whose max_age,
// idle_timeout or keep_alive has come (from the due index), and queued
// upstream revocations. It reads only the index and the queue, never every
// grant, so an idle mount costs a couple of Lists.
func (w *backgroundWorker) sweep(ctx context.Context, s logical.Storage) tidyStatus {
	w.running.Lock()
	defer w.running.Unlock()
	st := tidyStatus{StartedAt: time.Now().UTC()}
	defer func() {
		st.Duration = time.Since(st.StartedAt)
		w.mu.Lock()
		st.SweepsTotal = w.last.SweepsTotal + 1
		w.last = st
		w.mu.Unlock()
	}()

	st.NextDue = earliest(w.sweepDue(ctx, s, &st), w.sweepPending(ctx, s, &st))

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
		if !next.IsZero() && (st.NextDue.IsZero() || next.Before(st.NextDue)) {
			st.NextDue = next
		}
	}
	return st
}

// retryRevocation makes one attempt at a queued revocation if it is due and
// returns when the next attempt is due (zero when done).
func (w *backgroundWorker) retryRevocation(ctx context.Context, s logical.Storage, name string, interval time.Duration) (time.Time, bool, error) {
	b := w.b
	unlock := b.grantLocks.Lock(name)
	defer unlock()

	var m revocationMarker
	ok, err := getJSON(ctx, s, revokingPrefix+name, &m)
	if err != nil || !ok {
		return time.Time{}, false, err
	}
	if time.Now().Before(m.NextAttempt) {
		return m.NextAttempt, false, nil
	}
	g, err := getGrant(ctx, s, name)
	if err != nil {
		return time.Time{}, false, err
	}
	nothingLeft := g == nil || (g.Status != statusRevoking && g.Status != statusExpired) ||
		(g.RefreshToken.isZero() && !g.EraseAfterRevoke)
	if nothingLeft {
		return time.Time{}, false, s.Delete(ctx, revokingPrefix+name)
	}
	if _, err := b.revokeGrantUpstream(ctx, s, g); err != nil {
		m.Attempts++
		m.NextAttempt = time.Now().Add(retryBackoff(m.Attempts, interval)).UTC()
		if perr := putJSON(ctx, s, revokingPrefix+name, &m); perr != nil {
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
