package gpsindex

import (
	"math"

	"github.com/conftrace/conftrace/gps"
)

// Positions are in E7 units (1e-7 degree), as gps.Position holds them.
const (
	e7       = 1e7
	radPerE7 = math.Pi / 180 / e7
)

func abs32(v int32) int32 {
	if v < 0 {
		return -v
	}
	return v
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// unit returns the unit vector of a position.
func unit(p gps.Position) [3]float64 {
	lat, lon := float64(p.Lat)*radPerE7, float64(p.Lon)*radPerE7
	sl, cl := math.Sincos(lat)
	so, co := math.Sincos(lon)
	return [3]float64{cl * co, cl * so, sl}
}

// Cell keys pack three 18-bit cell coordinates; a run's key adds the
// slot in the remaining 10 bits.
const (
	coordBits       = 18
	cellBits        = 3 * coordBits
	slotBits        = 64 - cellBits
	slotsPerSegment = 1 << slotBits
	coordBias       = 1 << (coordBits - 1)
)

// runKey is the key of a run: the cell, then the slot, so that a cell's
// runs of consecutive slots are stored one after the other.
func runKey(slot, cell uint64) uint64 { return cell<<slotBits | slot }

func cellKey(cx, cy, cz int64) uint64 {
	const m = 1<<coordBits - 1
	return uint64(cx+coordBias)&m<<(2*coordBits) | uint64(cy+coordBias)&m<<coordBits | uint64(cz+coordBias)&m
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// item is a point being built into segments.
type item struct {
	chunk int64  // global slot / slotsPerSegment
	key   uint64 // runKey(slot within the chunk, cell key)
	t     int64
	pos   gps.Position
	leaf  uint16 // leafIndex within the cell
}

func (x *Index) item(t int64, pos gps.Position) item {
	g := floorDiv(t, x.slotWidth)
	u := unit(pos)
	var c, l [3]int64
	for a := range 3 {
		// The query computes u * perCell * leavesPerAxis the same way.
		w := u[a] * x.perCell
		c[a] = int64(math.Floor(w))
		l[a] = int64(math.Floor(w*leavesPerAxis)) - c[a]*leavesPerAxis
	}
	chunk := floorDiv(g, slotsPerSegment)
	return item{
		chunk: chunk,
		key:   runKey(uint64(g-chunk*slotsPerSegment), cellKey(c[0], c[1], c[2])),
		t:     t,
		pos:   pos,
		leaf:  uint16(leafIndex(l[0], l[1], l[2])),
	}
}
