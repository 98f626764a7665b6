package gpsindex

import (
	"os"
	"strings"
	"testing"
	"unsafe"
)

// TestHugePages checks that the advice leaves the contents as they were,
// whatever the kernel does with it, and reports what it did.
func TestHugePages(t *testing.T) {
	b := make([]byte, 9<<20)
	for i := range b {
		b[i] = byte(i*7 + i>>13)
	}
	hugePages(b)
	for i := range b {
		if b[i] != byte(i*7+i>>13) {
			t.Fatalf("byte %d changed", i)
		}
	}
	if mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled"); err == nil {
		t.Logf("transparent huge pages: %s", strings.TrimSpace(string(mode)))
	}
}

// TestAlignedHuge checks that a large segment's arrays start at a huge
// page, do not overlap, and are counted with their padding.
func TestAlignedHuge(t *testing.T) {
	var s segment
	points := alignMin / int(unsafe.Sizeof(point{}))
	s.alloc(points, 1000, 10, 100)
	if addr := uintptr(unsafe.Pointer(&s.mem[0])); addr%hugePage != 0 {
		t.Fatalf("memory starts at %#x, not at a huge page", addr)
	}
	if s.allocated < len(s.mem) || s.allocated > len(s.mem)+hugePage {
		t.Fatalf("allocated %d for %d bytes", s.allocated, len(s.mem))
	}
	if len(s.pts) != points || len(s.table) != 1000 || cap(s.dirs) != 10 || cap(s.leafOffs) != 100 {
		t.Fatalf("lengths %d %d %d %d", len(s.pts), len(s.table), cap(s.dirs), cap(s.leafOffs))
	}
	// Writing each array whole leaves the others as written.
	for i := range s.table {
		s.table[i] = entry{key: uint64(i), start: 1, end: 2}
	}
	s.dirs = s.dirs[:10]
	for i := range s.dirs {
		s.dirs[i].first = uint32(i)
		s.dirs[i].bits[len(s.dirs[i].bits)-1] = ^uint64(0)
	}
	s.leafOffs = s.leafOffs[:100]
	for i := range s.leafOffs {
		s.leafOffs[i] = 7
	}
	for i := range s.pts {
		s.pts[i] = point{lat: int32(i), lon: -1, t: 3}
	}
	for i, e := range s.table {
		if e != (entry{key: uint64(i), start: 1, end: 2}) {
			t.Fatalf("entry %d is %+v", i, e)
		}
	}
	for i, d := range s.dirs {
		if d.first != uint32(i) || d.bits[len(d.bits)-1] != ^uint64(0) {
			t.Fatalf("dir %d is %+v", i, d)
		}
	}
	for i, o := range s.leafOffs {
		if o != 7 {
			t.Fatalf("leaf offset %d is %d", i, o)
		}
	}
	if end := uintptr(unsafe.Pointer(&s.pts[len(s.pts)-1])) + unsafe.Sizeof(point{}); end != uintptr(unsafe.Pointer(&s.mem[0]))+uintptr(len(s.mem)) {
		t.Fatalf("points end at %#x, memory at %#x", end, uintptr(unsafe.Pointer(&s.mem[0]))+uintptr(len(s.mem)))
	}
}
