package gpsindex

// NewGrid makes an index with a given slot width (seconds) and cell size
// (metres), for benchmarks that compare grids.
var NewGrid = newIndex
