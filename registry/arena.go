package registry

import (
	"hash/maphash"
	"sync/atomic"
	"unsafe"
)

// The index keeps every webhook as bytes in an arena instead of as a
// Webhook struct: a million structs with a dozen string headers each are
// a dozen million pointers the GC marks every cycle, and with their
// strings they cost over twice the bytes. Arena chunks and the tables of
// offsets into them hold no pointers, so the GC neither scans them nor
// counts them as anything but plain bytes.

// chunkBits sizes arena chunks. An offset is chunk<<chunkBits | position;
// an item larger than a chunk gets a chunk of its own, at position 0.
const chunkBits = 20

// arena is an append-only byte store. Readers never lock: what they read
// was written before the offset was published (through an atomic store
// of the table that names it) and is never written again.
type arena struct {
	chunks atomic.Pointer[[][]byte]
	used   int // bytes used in the last chunk (writer only)
	size   int // bytes held, all chunks (writer only)
	// interned maps a string's hash to where it is stored, so that the
	// workspace, event type and URL many webhooks share are stored once.
	// Only writers use it, and its size is bounded: past the bound new
	// strings are simply stored where they are used.
	interned map[uint64]uint64
	seed     maphash.Seed
}

// maxInterned bounds arena.interned (about 2 MiB).
const maxInterned = 1 << 16

func newArena(seed maphash.Seed) *arena {
	a := &arena{interned: make(map[uint64]uint64), seed: seed}
	a.chunks.Store(&[][]byte{})
	return a
}

// alloc returns the offset of n fresh bytes and the bytes to fill in.
func (a *arena) alloc(n int) (uint64, []byte) {
	cs := *a.chunks.Load()
	if len(cs) == 0 || a.used+n > 1<<chunkBits {
		size := max(n, 1<<chunkBits)
		next := make([][]byte, len(cs), len(cs)+1)
		copy(next, cs)
		cs = append(next, make([]byte, size))
		a.chunks.Store(&cs)
		a.used = 0
		a.size += size
	}
	off := uint64(len(cs)-1)<<chunkBits | uint64(a.used)
	b := cs[len(cs)-1][a.used : a.used+n : a.used+n]
	a.used += n
	if n > 1<<chunkBits {
		a.used = 1 << chunkBits // the item fills its own chunk
	}
	return off, b
}

// at returns the bytes from off to the end of its chunk.
func (a *arena) at(off uint64) []byte {
	cs := *a.chunks.Load()
	return cs[off>>chunkBits][off&(1<<chunkBits-1):]
}

// str reads the length-prefixed string stored at off. It shares the
// arena's bytes, which are never written again.
func (a *arena) str(off uint64) string {
	s, _ := readString(a.at(off))
	return s
}

// intern stores s (length-prefixed) once and returns where.
func (a *arena) intern(s string) uint64 {
	h := maphash.String(a.seed, s)
	if off, ok := a.interned[h]; ok && a.str(off) == s {
		return off
	}
	off, b := a.alloc(uvarintLen(uint64(len(s))) + len(s))
	copy(b[putUvarint(b, uint64(len(s))):], s)
	if len(a.interned) < maxInterned {
		a.interned[h] = off
	}
	return off
}

// readString decodes a length-prefixed string at the start of b and
// returns it, sharing b's bytes, and the bytes after it.
func readString(b []byte) (string, []byte) {
	n, k := readUvarint(b)
	b = b[k:]
	if n == 0 {
		return "", b
	}
	return unsafe.String(&b[0], n), b[n:]
}

// readUvarint is binary.Uvarint without its overflow checks: the arena
// holds only what putUvarint wrote.
func readUvarint(b []byte) (int, int) {
	var x uint64
	var s uint
	for i, c := range b {
		if c < 0x80 {
			return int(x | uint64(c)<<s), i + 1
		}
		x |= uint64(c&0x7f) << s
		s += 7
	}
	return 0, len(b)
}

func putUvarint(b []byte, x uint64) int {
	i := 0
	for x >= 0x80 {
		b[i] = byte(x) | 0x80
		x >>= 7
		i++
	}
	b[i] = byte(x)
	return i + 1
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// slabBits sizes the chunks of a slab.
const slabBits = 14

// slab is a growable array whose elements never move, so readers index
// it without locking while a writer appends.
type slab[T any] struct {
	dir atomic.Pointer[[]*[1 << slabBits]T]
}

// at returns element i, which must have been published.
func (s *slab[T]) at(i uint32) *T {
	return &(*s.dir.Load())[i>>slabBits][i&(1<<slabBits-1)]
}

// grow makes room for element i (the writer appends in order).
func (s *slab[T]) grow(i uint32) {
	d := s.dir.Load()
	if d != nil && int(i>>slabBits) < len(*d) {
		return
	}
	var next []*[1 << slabBits]T
	if d != nil {
		next = make([]*[1 << slabBits]T, len(*d), len(*d)+1)
		copy(next, *d)
	}
	next = append(next, new([1 << slabBits]T))
	s.dir.Store(&next)
}
