package gpsindex

// NewGrid makes an index with a given slot width (seconds) and cell size
// (metres), for benchmarks that compare grids.
func NewGrid(slotWidth int64, cellSize float64, denseMin int) *Index {
	return newIndex(slotWidth, cellSize, denseMin)
}
