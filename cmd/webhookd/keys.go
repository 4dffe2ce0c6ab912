package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/webhookd/webhookd/dispatcher/capacity"
	"github.com/webhookd/webhookd/events/natsconn"
	"github.com/webhookd/webhookd/registry/apikeys"
)

const keysUsage = `Usage: webhookd keys create --workspace W [--expires 720h] [NATS flags]
       webhookd keys list [--workspace W] [NATS flags]
       webhookd keys revoke [--workspace W] KEY_ID [NATS flags]

Manages the API keys shared by every instance through the --keys-bucket
bucket; changes take effect on every running instance within a second.
"create" prints the key on stdout, once: it is stored only as a hash.
The NATS flags (and their WEBHOOKD_* twins) are the daemon's: with an
empty --nats-url the command connects to a running daemon's embedded
server at --nats-listen.
`

// keysCmd is `webhookd keys create|list|revoke`.
func keysCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "create" && args[0] != "list" && args[0] != "revoke") {
		fmt.Fprint(stderr, keysUsage)
		return 2
	}
	verb := args[0]
	var o options
	fs := newFlagSet(&o, stderr) // the daemon's flags: NATS, --keys-bucket, --stream-replicas
	workspace := fs.String("workspace", "", "workspace of the key (create: required; list, revoke: optional filter or guard)")
	expires := fs.Duration("expires", 0, "create: the key expires this long from now (0: never)")
	fs.Usage = func() { fmt.Fprint(stderr, keysUsage) }
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	id := ""
	if verb == "revoke" && fs.NArg() > 0 {
		id = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil { // flags may follow the id
			return 2
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "webhookd keys: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := fillFromEnv(fs, map[string]bool{"workspace": true, "expires": true}); err != nil {
		fmt.Fprintln(stderr, "webhookd keys:", err)
		return 2
	}
	if err := o.validate(); err != nil {
		fmt.Fprintln(stderr, "webhookd keys:", err)
		return 2
	}
	switch {
	case o.keysBucket == "":
		fmt.Fprintln(stderr, "webhookd keys: --keys-bucket is empty: shared API keys are turned off")
		return 2
	case verb == "create" && *workspace == "":
		fmt.Fprintln(stderr, "webhookd keys create: --workspace is required")
		return 2
	case verb == "revoke" && id == "":
		fmt.Fprintln(stderr, "webhookd keys revoke: the key id (ak_...) is required")
		return 2
	case *expires < 0 || (*expires != 0 && verb != "create"):
		fmt.Fprintln(stderr, "webhookd keys: --expires must be positive, and only with create")
		return 2
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, closeNATS, err := keysStore(ctx, o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "webhookd keys:", err)
		return 1
	}
	defer closeNATS()

	switch verb {
	case "create":
		c, err := store.Create(ctx, *workspace, *expires)
		if err != nil {
			fmt.Fprintln(stderr, "webhookd keys create:", err)
			return 1
		}
		fmt.Fprintf(stderr, "created %s for workspace %s, expires %s; the key below is shown only this once\n",
			c.Record.ID, c.Record.Workspace, expiry(c.Record))
		fmt.Fprintln(stdout, c.Key)
	case "list":
		recs, err := store.List(ctx, *workspace)
		if err != nil {
			fmt.Fprintln(stderr, "webhookd keys list:", err)
			return 1
		}
		now := time.Now()
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tWORKSPACE\tSTATE\tCREATED\tEXPIRES\tREVOKED")
		for _, r := range recs {
			revoked := "-"
			if r.Revoked {
				revoked = r.RevokedAt.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Workspace, r.StateAt(now),
				r.CreatedAt.Format(time.RFC3339), expiry(r), revoked)
		}
		if err := tw.Flush(); err != nil {
			return 1
		}
	case "revoke":
		if *workspace != "" {
			r, err := store.Get(ctx, id)
			if err != nil {
				fmt.Fprintln(stderr, "webhookd keys revoke:", err)
				return 1
			}
			if r.Workspace != *workspace {
				fmt.Fprintf(stderr, "webhookd keys revoke: %s belongs to workspace %s, not %s; nothing changed\n", id, r.Workspace, *workspace)
				return 1
			}
		}
		r, err := store.Revoke(ctx, id)
		if err != nil {
			fmt.Fprintln(stderr, "webhookd keys revoke:", err)
			return 1
		}
		fmt.Fprintf(stdout, "revoked %s (workspace %s) at %s\n", r.ID, r.Workspace, r.RevokedAt.Format(time.RFC3339))
	}
	return 0
}

func expiry(r apikeys.Record) string {
	if r.ExpiresAt.IsZero() {
		return "never"
	}
	return r.ExpiresAt.Format(time.RFC3339)
}

// keysStore connects to NATS as the daemon would (same URL, credentials
// and TLS flags) and returns a Store for one-off operations.
func keysStore(ctx context.Context, o options, stderr io.Writer) (*apikeys.Store, func(), error) {
	url := o.natsURL
	if url == "" {
		url = "nats://" + o.natsListen // a running daemon's embedded server
	}
	quiet := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	nc, err := natsconn.Connect(natsconn.Config{
		URL: url, Name: o.natsName + "-keys",
		CredsFile: o.natsCreds, NKeySeedFile: o.natsNKey, User: o.natsUser, Password: o.natsPassword,
		Token: o.natsToken, CAFile: o.natsTLSCA, CertFile: o.natsTLSCert, KeyFile: o.natsTLSKey,
		Logger: quiet,
	})
	if err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for !nc.IsConnected() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			nc.Close()
			hint := ""
			if o.natsURL == "" {
				hint = " (no --nats-url: is webhookd running with its embedded server there?)"
			}
			return nil, nil, fmt.Errorf("cannot reach NATS at %s%s: %v", url, hint, nc.LastError())
		}
		time.Sleep(50 * time.Millisecond)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	// The daemon's budget share, should this command be the one to create
	// the bucket (the daemon updates it to its own at start anyway).
	store, err := apikeys.New(apikeys.Config{JetStream: js, Bucket: o.keysBucket, Replicas: o.replicas,
		MaxBytes: capacity.Budget(o.natsMaxStore).Keys, Logger: quiet})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return store, nc.Close, nil
}

// fillFromEnv sets every flag of fs not given on the command line (and not
// in skip) from its environment twin, as parseOptions does for the daemon.
func fillFromEnv(fs *flag.FlagSet, skip map[string]bool) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || skip[f.Name] {
			return
		}
		if v := lookupEnv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("invalid value for %s (flag --%s): %v", envName(f.Name), f.Name, err))
			}
		}
	})
	return errors.Join(errs...)
}
