package capacity

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// trim purges events fan-out has acknowledged: the oldest while the events
// stream is above TrimAt of its limit (down to about TrimTo), and every one
// older than Retention. Purging by sequence removes the oldest events first
// and never one at or above the fan-out consumer's first unacknowledged
// event, so no event that still has to be fanned out is ever lost, however
// old, whatever the estimates below get wrong.
func (m *Monitor) trim(ctx context.Context, st jetstream.Stream, info *jetstream.StreamInfo) {
	limit, bytes, msgs := info.Config.MaxBytes, info.State.Bytes, info.State.Msgs
	pressed := limit > 0 && m.cfg.TrimAt < 1 && msgs > 0 && float64(bytes) >= m.cfg.TrimAt*float64(limit)
	cutoff := m.cfg.Now().Add(-m.cfg.Retention)
	aged := msgs > 0 && info.State.FirstTime.Before(cutoff)
	var fill float64
	if limit > 0 {
		fill = float64(bytes) / float64(limit)
	}
	if !pressed {
		m.setStuck(false, "", 0, 0)
	}
	if !aged {
		m.setAging(false, "", time.Time{})
	}
	if !pressed && !aged {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cons, err := st.Consumer(ctx, m.cfg.FanoutConsumer)
	if err != nil {
		// Not created yet, or NATS trouble: nothing is known fanned out.
		why := "the fan-out consumer is unreadable: " + err.Error()
		if pressed {
			m.setStuck(true, why, fill, limit)
		}
		if aged {
			m.setAging(true, why, info.State.FirstTime)
		}
		return
	}
	first := info.State.FirstSeq
	bound := cons.CachedInfo().AckFloor.Stream + 1 // the first event a purge must keep
	bySize, byAge := first, first
	if pressed {
		// Messages to drop, from the average size: the purge is by sequence.
		avg := float64(bytes) / float64(msgs)
		n := uint64(math.Ceil((float64(bytes) - m.cfg.TrimTo*float64(limit)) / avg))
		bySize = max(first, min(first+n, bound))
		if bySize == first {
			m.setStuck(true, "fan-out is behind or paused", fill, limit)
		} else {
			m.setStuck(false, "", 0, 0)
		}
	}
	if aged && bound > first {
		if byAge, err = m.olderThan(ctx, st, first, min(bound, info.State.LastSeq+1), cutoff); err != nil {
			m.log.Warn("finding the events past their retention failed", "stream", info.Config.Name, "err", err)
			byAge = first
		}
	}
	upTo := max(bySize, byAge) // purge removes sequences below upTo
	if upTo <= first {
		if aged {
			m.setAging(true, "fan-out is behind or paused", info.State.FirstTime)
		}
		return
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(upTo)); err != nil {
		m.log.Warn("trimming the events stream failed", "stream", info.Config.Name, "err", err)
		return
	}
	after, err := st.Info(ctx)
	if err != nil {
		return
	}
	var purged uint64
	if after.State.FirstSeq > first {
		purged = after.State.FirstSeq - first
	}
	expired := min(purged, byAge-first)
	m.expired.Add(float64(expired))
	m.trimmed.Add(float64(purged - expired))
	m.record(info.Config.Name, after, 0, nil)
	// Whatever is left older than the cutoff is what fan-out still holds.
	m.setAging(after.State.Msgs > 0 && after.State.FirstTime.Before(cutoff), "fan-out is behind or paused", after.State.FirstTime)
	if purged > expired {
		m.log.Info("events stream trimmed: fanned-out events purged under storage pressure, the replay window is shorter",
			"stream", info.Config.Name, "purged", purged, "fill_before", pct(fill),
			"fill_after", pct(float64(after.State.Bytes)/float64(max(limit, 1))), "oldest_kept", after.State.FirstTime)
		return
	}
	// Routine: with steady traffic this happens at every sample.
	m.log.Debug("fanned-out events past their retention purged", "stream", info.Config.Name, "purged", purged,
		"retention", m.cfg.Retention, "oldest_kept", after.State.FirstTime)
}

// olderThan returns the sequence of the first event in [lo, hi) stored at
// or after cutoff, or hi if there is none: purging below it removes only
// events older than cutoff. Stored times grow with the sequence, so a
// binary search needs about log2(hi-lo) reads, and the gaps a purge or a
// deletion leaves are skipped by reading the next event at or after a
// sequence.
func (m *Monitor) olderThan(ctx context.Context, st jetstream.Stream, lo, hi uint64, cutoff time.Time) (uint64, error) {
	for lo < hi {
		mid := lo + (hi-lo)/2
		msg, err := st.GetMsg(ctx, mid, jetstream.WithGetMsgSubject(">"))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			hi = mid // nothing stored from mid on
		case err != nil:
			return 0, err
		case msg.Time.Before(cutoff):
			lo = min(msg.Sequence+1, hi) // nothing stored in [mid, msg.Sequence)
		default:
			hi = mid
		}
	}
	return lo, nil
}

// setStuck logs, once per episode, that the events stream is filling with
// events fan-out has not taken yet, which no trim can free.
func (m *Monitor) setStuck(stuck bool, why string, fill float64, limit int64) {
	m.mu.Lock()
	was := m.stuck
	m.stuck = stuck
	m.mu.Unlock()
	if stuck && !was {
		m.log.Warn("events stream above its trim mark with nothing fanned out to trim; publishers are refused once it is full",
			"stream", m.cfg.EventsStream, "why", why, "fill", pct(fill), "limit_bytes", limit)
	}
}

// setAging logs, once per episode, that events older than the retention
// are kept because fan-out has not finished with them.
func (m *Monitor) setAging(aging bool, why string, oldest time.Time) {
	m.mu.Lock()
	was := m.aging
	m.aging = aging
	m.mu.Unlock()
	if aging && !was {
		m.log.Warn("events older than the retention are kept: fan-out has not finished with them",
			"stream", m.cfg.EventsStream, "why", why, "oldest", oldest, "retention", m.cfg.Retention)
	}
}
