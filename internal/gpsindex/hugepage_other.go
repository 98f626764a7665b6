//go:build !linux

package gpsindex

// hugePages does nothing outside Linux; see hugepage_linux.go.
func hugePages([]byte) {}
