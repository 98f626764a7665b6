// Package boundary states conftrace's trust boundary as a test, from the
// import graph that "go list -deps" reports: what the measured image
// (cmd/conftraced) may contain, and which packages may not depend on which.
// It has no code of its own; its test fails, naming the import chain at
// fault, when a change crosses the boundary, and when the README's table of
// what runs in the measured image no longer matches the image.
package boundary
