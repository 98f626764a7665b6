//go:build !linux

package gpsindex

// hugePages does nothing outside Linux; see hugepage_linux.go.
func hugePages([]byte) {}

// alignedHuge returns size zeroed bytes, and how many it allocated.
func alignedHuge(size int) ([]byte, int) { return make([]byte, size), size }
