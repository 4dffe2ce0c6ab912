package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/registry"
)

// Sync returns nil once this Store has applied every entry the bucket
// held when Sync was called: it reads the bucket's latest revision (one
// round trip) and waits, until ctx ends, for the watch to apply it. Any
// write acknowledged by any instance before the call is then in the Store.
// It fails at once while an entry cannot be applied (see Ready).
func (r *Replica) Sync(ctx context.Context) error {
	if err := r.stuck(); err != nil {
		return err
	}
	if !r.cfg.JetStream.Conn().IsConnected() {
		return fmt.Errorf("%w: NATS is not connected", registry.ErrUnavailable)
	}
	kv, err := r.bucket()
	if err != nil {
		return err
	}
	last, err := r.latestRevision(ctx, kv)
	if err != nil {
		return err
	}
	if !r.waitApplied(ctx, func() bool { return r.watched.Load() >= last }) {
		return fmt.Errorf("replica: registry at revision %d, shared registry at %d: %w", r.watched.Load(), last, ctx.Err())
	}
	return r.stuck()
}

// lastRevision is the bucket's latest revision: the sequence of the last
// message in its stream. The compactor never removes that message, so the
// watch always reaches it.
func lastRevision(ctx context.Context, kv jetstream.KeyValue) (uint64, error) {
	st, err := kv.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("%w: bucket status: %v", registry.ErrUnavailable, err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return 0, errors.New("replica: bucket status carries no stream state")
	}
	return bs.StreamInfo().State.LastSeq, nil
}

// latestRevision is lastRevision as Sync asks it, once per batch of events
// fan-out takes: the sequence of the bucket stream's last message, read by
// the stream's leader (so never behind, unlike a direct get a follower may
// answer). Asking for that one message costs the server and the client a
// fraction of a stream info, whose JSON carries the whole configuration
// and state. A last message removed since (a purged deletion marker) needs
// no waiting for: whatever came later has a higher sequence.
func (r *Replica) latestRevision(ctx context.Context, kv jetstream.KeyValue) (uint64, error) {
	js := r.cfg.JetStream
	prefix := "$JS.API."
	if o := js.Options(); o.Domain != "" {
		prefix = "$JS." + o.Domain + ".API."
	} else if o.APIPrefix != "" {
		prefix = strings.TrimSuffix(o.APIPrefix, ".") + "."
	}
	msg, err := js.Conn().RequestWithContext(ctx, prefix+"STREAM.MSG.GET.KV_"+r.cfg.Bucket, lastMsgRequest)
	if err != nil {
		return 0, fmt.Errorf("%w: bucket's latest revision: %v", registry.ErrUnavailable, err)
	}
	var resp struct {
		Error *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, fmt.Errorf("%w: bucket's latest revision: %v", registry.ErrUnavailable, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound):
		// An empty bucket; or one whose messages are all removed, which
		// the stream's state can tell apart.
		return lastRevision(ctx, kv)
	case resp.Error != nil:
		return 0, fmt.Errorf("%w: bucket's latest revision: %s", registry.ErrUnavailable, resp.Error.Description)
	case resp.Message == nil:
		return 0, fmt.Errorf("%w: bucket's latest revision: an answer without a message", registry.ErrUnavailable)
	}
	return resp.Message.Seq, nil
}

// lastMsgRequest asks for the stream's last message, without its headers.
var lastMsgRequest = []byte(`{"last_by_subj":">","no_hdr":true}`)
