package registry

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// largeLoad is the registry size from which Open hands the load's garbage
// and the file's pages back to the OS at once instead of over minutes.
const largeLoad = 50_000

// loadChunk is how many records are decoded per parallel round; after
// each round of a large load the file pages read so far are released, so
// the load never holds the whole file resident.
const loadChunk = 1 << 16

// loadAll decodes every stored webhook, on all cores, and hands each to
// add in storage order, a chunk at a time, so that the decoded structs of
// one chunk are garbage before the next is decoded. It returns how many
// it decoded and those whose secret must be re-sealed under the current
// key.
func (s *Store) loadAll(add func(*Webhook)) (n int, reseal []*Webhook, err error) {
	if fi, err := os.Stat(s.db.Path()); err == nil && fi.Size() > 64<<20 {
		// The decoder's garbage would otherwise let the heap grow to twice
		// the registry before a collection; collect more often instead.
		defer debug.SetGCPercent(debug.SetGCPercent(25))
	}
	type record struct {
		workspace []byte
		value     []byte
	}
	var chunk []record
	decodeChunk := func() error {
		ws := make([]*Webhook, len(chunk))
		stale := make([]bool, len(chunk))
		workers := max(1, min(runtime.GOMAXPROCS(0), len(chunk)/1000))
		errs := make([]error, workers)
		var wg sync.WaitGroup
		for g := range workers {
			lo, hi := g*len(chunk)/workers, (g+1)*len(chunk)/workers
			wg.Go(func() {
				for i := lo; i < hi; i++ {
					w, st, err := s.decode(chunk[i].value)
					if err != nil {
						errs[g] = fmt.Errorf("webhook record in workspace %s: %w", chunk[i].workspace, err)
						return
					}
					ws[i], stale[i] = w, st
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		for i, st := range stale {
			if st {
				reseal = append(reseal, ws[i])
			}
		}
		for _, w := range ws {
			add(w)
		}
		n += len(ws)
		chunk = chunk[:0]
		if n >= largeLoad {
			releaseFilePages(s.db, s.db.Path())
		}
		return nil
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		// The values point into bbolt's map and stay valid until the
		// transaction ends, so they are decoded before View returns.
		root := tx.Bucket(bucketWebhooks)
		err := root.ForEachBucket(func(ws []byte) error {
			return root.Bucket(ws).ForEach(func(_, v []byte) error {
				chunk = append(chunk, record{ws, v})
				if len(chunk) == loadChunk {
					return decodeChunk()
				}
				return nil
			})
		})
		if err != nil {
			return err
		}
		return decodeChunk()
	})
	return n, reseal, err
}

// settleAfterLoad returns what a large load leaves behind: the decoder's
// garbage (as much again as the registry) and the resident pages of the
// bbolt file, which the load read end to end once and which later reads
// fault back in from the page cache as needed.
func settleAfterLoad(db *bolt.DB, path string, n int) {
	if n < largeLoad {
		return
	}
	releaseFilePages(db, path)
	debug.FreeOSMemory()
}
