package failurelog

import (
	"context"
	"time"

	"github.com/webhookd/webhookd/registry"
)

// Drainer hands over failure records kept elsewhere, deleting each one fn
// accepted. registry.Store satisfies it (the records of a version that
// kept them in bbolt).
type Drainer interface {
	DrainFailures(ctx context.Context, fn func(registry.Failure) error) error
}

// Import moves every record of src into the log once the log is set up,
// retrying (with backoff) while it is not, until done or ctx ends. A
// record is deleted from src only after the log stored it, so an
// interrupted import loses nothing and the next start resumes it.
func (l *Log) Import(ctx context.Context, src Drainer) {
	for wait := time.Second; ; wait = min(2*wait, time.Minute) {
		if l.Ready() == nil {
			n := 0
			err := src.DrainFailures(ctx, func(f registry.Failure) error {
				if err := l.RecordFailure(ctx, f); err != nil {
					return err
				}
				n++
				return nil
			})
			if n > 0 {
				l.log.Info("moved local failure records to the shared failure log", "count", n)
			}
			if err == nil {
				return
			}
			l.log.Warn("moving local failure records to the shared failure log; will retry", "err", err, "in", wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
