package replica

import (
	"context"
	"fmt"
	"time"
)

// dedupeWindow is the duplicate window of the bucket's stream. Bucket
// writes carry no message id, so the window never deduplicates anything;
// but a NATS server recovering the stream reads every message written
// within the window to rebuild it, and keeps the per-subject state of the
// blocks it read for minutes. With the key-value default of two minutes,
// a restart soon after a burst of registrations (a million of them: the
// bench's restart) holds a second index of the whole bucket, over 100 MiB
// at a million keys. The smallest window the server accepts reads next
// to nothing.
const dedupeWindow = 100 * time.Millisecond

// shrinkDedupeWindow sets the bucket stream's duplicate window to
// dedupeWindow. CreateOrUpdateKeyValue puts the key-value default back on
// every start, so it runs after each; what counts is the window stored
// when the server next recovers the stream.
func (r *Replica) shrinkDedupeWindow(ctx context.Context) error {
	stream, err := r.cfg.JetStream.Stream(ctx, "KV_"+r.cfg.Bucket)
	if err != nil {
		return fmt.Errorf("bucket stream: %w", err)
	}
	cfg := stream.CachedInfo().Config
	if cfg.Duplicates == dedupeWindow {
		return nil
	}
	cfg.Duplicates = dedupeWindow
	if _, err := r.cfg.JetStream.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("bucket stream duplicate window: %w", err)
	}
	return nil
}
