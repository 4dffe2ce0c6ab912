package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/webhookd/webhookd/registry"
)

// keyRings are the configured keys (--api-keys), the workspaces they are
// for, and the bootstrap key: separate so that api.KeySet can retire the
// bootstrap key once another key exists for its workspace.
type keyRings struct {
	static, bootstrap *registry.KeyRing
	workspaces        map[string]bool
}

// apiKeys returns the key rings, creating the bootstrap key on a first
// start without --api-keys.
func apiKeys(ctx context.Context, o options, store *registry.Store, log *slog.Logger) (keyRings, error) {
	parsed, err := registry.ParseAPIKeys(o.apiKeys)
	if err != nil {
		return keyRings{}, fmt.Errorf("--api-keys: %w", err)
	}
	if len(parsed) == 0 {
		path := filepath.Join(o.dataDir, "bootstrap-api-key")
		created, err := store.Bootstrap(ctx, path)
		if err != nil {
			return keyRings{}, err
		}
		if created {
			log.Info("no API key configured: created one for workspace \"default\" (retired once another key exists for it: `webhookd keys create --workspace default`, or a default: key in --api-keys)", "file", path)
		}
	}
	stored, err := store.StoredKeys(ctx)
	if err != nil {
		return keyRings{}, err
	}
	rings := keyRings{static: registry.NewKeyRing(parsed, nil), bootstrap: registry.NewKeyRing(nil, stored),
		workspaces: make(map[string]bool, len(parsed))}
	for _, k := range parsed {
		rings.workspaces[k.Workspace] = true
	}
	for _, k := range stored {
		if rings.workspaces[k.Workspace] {
			log.Info("the bootstrap API key is refused: --api-keys configures a key for its workspace", "workspace", k.Workspace)
			break
		}
	}
	return rings, nil
}
