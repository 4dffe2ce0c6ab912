package registry

import (
	"os"
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// releaseFilePages drops bbolt's read-only shared mapping of the file from
// this process's resident set. The data stays in the file and the page
// cache; the next access faults the page back in.
func releaseFilePages(db *bolt.DB, path string) {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() == 0 {
		return
	}
	// The mapping is at least as long as the file (bbolt maps the file's
	// size rounded up), so the range is mapped. Errors only mean the pages
	// stay resident.
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, db.Info().Data, uintptr(fi.Size()), syscall.MADV_DONTNEED)
}
