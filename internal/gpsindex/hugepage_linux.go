package gpsindex

import (
	"syscall"
	"unsafe"
)

// alignedHuge returns size zeroed bytes, and how many it allocated. From
// alignMin bytes on, they start at a huge page, and their whole huge
// pages are advised (MADV_HUGEPAGE) before anything touches them: the
// kernel then faults them in as huge pages. Below it, a huge page of
// padding would be too large a share of the allocation, and hugePages
// after filling does what it can.
func alignedHuge(size int) ([]byte, int) {
	if size < alignMin {
		return make([]byte, size), size
	}
	b := make([]byte, size+hugePage)
	off := (hugePage - int(uintptr(unsafe.Pointer(&b[0]))%hugePage)) % hugePage
	a := b[off : off+size : off+size]
	_ = syscall.Madvise(a[:size&^(hugePage-1)], syscall.MADV_HUGEPAGE)
	return a, len(b)
}

const (
	hugePage = 2 << 20
	alignMin = 32 * hugePage
)

// madvCollapse is MADV_COLLAPSE (Linux 6.1), which package syscall lacks.
const madvCollapse = 25

// hugePages asks the kernel to back the whole 2 MiB pages within b with
// huge pages, now (MADV_COLLAPSE copies them into place) and after
// (MADV_HUGEPAGE), where transparent huge pages are enabled at least for
// madvise. A query reads a few points in each of many places of a
// gigabyte-sized index, and with 4 KiB pages nearly every one of those
// reads also misses the TLB, which costs most in a virtual machine (as
// TDX and SEV-SNP guests are), where a TLB miss walks two page tables.
// It is advice: errors (an older kernel, no huge page free) leave b as it
// is.
func hugePages(b []byte) {
	if len(b) < hugePage {
		return
	}
	addr := uintptr(unsafe.Pointer(&b[0]))
	skip := (hugePage - addr%hugePage) % hugePage
	n := (uintptr(len(b)) - skip) &^ (hugePage - 1)
	if skip >= uintptr(len(b)) || n == 0 {
		return
	}
	r := b[skip : skip+n]
	_ = syscall.Madvise(r, syscall.MADV_HUGEPAGE)
	_ = syscall.Madvise(r, madvCollapse)
}
