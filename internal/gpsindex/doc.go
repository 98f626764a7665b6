// Package gpsindex keeps, in enclave memory, the GPS points of infected
// patients' traces, and finds for each point of a device's trace whether
// an infected point was close enough at about the same time.
//
//	idx, err := gpsindex.New(params)             // params: the policy's gps.Params
//	for day, tr := range gpsindex.Days(upload) { // seal and index per day
//		err = idx.Add(day, tr)
//	}
//	matches, err := idx.Query(deviceTrace, params)
//	episodes := gps.Episodes(deviceTrace, matches, params)
//	exposed := gps.Exposed(episodes, params)
//	removed := idx.Drop(expiredDay)              // retention
//
// Query gives exactly what [gps.BruteForceMatches] gives against every
// trace added and not dropped, in the form [gps.RunningClosest] puts it:
// the same matched flags, and for each matched fix the closest distance
// of its episode so far, to the bit. So the episodes are identical.
//
// # Memory layout
//
// Points are grouped by the day they are added under, and each day's
// points are stored in immutable segments. A segment covers up to 1,024
// time slots of a fixed width (12 times the time tolerance the index was
// made for: an hour by default) and stores each point in 12 bytes: latitude
// and longitude as int32 in 1e-7 degree (the resolution at which the gps
// package compares positions, so nothing is lost) and the time as a uint32
// offset in seconds from the segment's start. Cells are cubes of a 3D grid
// over the unit vectors of positions, 8 times the distance threshold wide
// (at least 64 m): unlike a latitude/longitude grid, it has no special
// cases at the poles or the antimeridian. The points of one cell in one
// slot form a run, sorted by time, and an open-addressing hash table (16
// bytes an entry, at most 70 % full) maps (slot, cell) to its run. Runs
// are stored cell by cell, and a cell's runs slot by slot: a device that
// stays in a place for hours reads the next hour's run, and its table
// entry, next to the last, in memory it has just read.
//
// A dense run (128 points or more: a busy building, a station) is split
// further into 4×4×4 leaves (20 m wide at the default grid, twice the
// distance threshold, so that a fix reaches at most two leaves along each
// axis, eight in all, where leaves half as wide could reach 27) and
// sorted by leaf, then time; a 16-byte directory per dense run tells
// which leaves hold points and where each starts.
//
// A point costs 12 bytes plus its share of the table and directories,
// which depends on how many points share a cell in a slot (BenchmarkQuery
// reports it as B/point). On Linux a new segment's arrays are backed by
// huge pages where the kernel allows it (see hugePages): a check reads a
// few points in each of many places, and with 4 KiB pages nearly every
// such read would also miss the TLB. They share one allocation, which
// from 64 MiB on starts at a huge page, for at most 2 MiB of padding (see
// segment.alloc).
//
// Adding a trace builds new segments; segments of the same day are merged
// when the older is less than twice the newer's size, so a day holds a
// logarithmic number of generations, which every query reads. Compact
// rebuilds each day as one generation, beside queries and Adds; the
// backend compacts hourly. Load adds without merging, for the start-up,
// which loads its sealed store in batches and then compacts once.
// Queries read an immutable snapshot without locks; Add, Drop and the
// swaps of Compact are serialized and publish a new snapshot.
//
// # Queries
//
// For each fix of the device, in order, Query visits the segments whose
// time span overlaps [fix.Time − tolerance, fix.Time + tolerance], and in
// each the runs of the slots that overlap that window: first the run of
// the fix's own cell, which usually holds a close point and so shrinks
// the search, then those of the neighbouring cells whose box is still
// within the best distance found. In a dense run it reads the fix's own
// leaf first, then only the leaves whose box is still close enough: a few
// fixes instead of every fix of the hour. Within a run or leaf, it reads
// the points of the time window (found by a binary search).
//
// For each such point it computes a lower bound of the distance in a few
// integer multiplications (see lowerBound2) and keeps the point as a
// candidate if the bound does not exclude it; the exact distance,
// [gps.Position.Distance] on the same integer coordinates the brute force
// uses, is then computed for the candidate with the least bound and for
// any other whose bound does not exclude it from beating the best. Most
// points fail the bound, so few haversines are computed.
//
// Within an episode (a fix matched, and the one before it matched at
// most MaxGap earlier) a fix needs less: to be matched, and whether a
// point is closer than the episode's closest distance so far. Once a
// candidate is proven within the threshold by an upper bound of its
// distance (see provenWithin), the bounds drop to that closest distance,
// which after a few fixes in a busy building leaves only the fix's own
// leaf to read, and usually no haversine to compute.
//
// A device's consecutive fixes are minutes apart and usually in the same
// few cells, so a query remembers the runs and leaves it read and where
// their last time window started (runCache, leafCache), and computes the
// fix's sines and cosines from the last fix's (angle).
//
// # Exactness
//
// Pruning by time (segments, slots, the window within a run) discards
// only points outside the time tolerance, as the brute force does, in
// integer seconds. Pruning by distance (cells, leaves, lower bounds) only
// discards points whose distance exceeds the threshold, or the best
// distance found, by at least a millimetre, while the floating-point
// error of the computed distances and unit vectors is below a micrometre
// at these scales; so no point the brute force would pick is skipped,
// and the distance reported is computed by the very same function. The
// upper bound that proves a fix matched keeps a millimetre's margin the
// other way.
//
// Property tests compare Query with gps.BruteForceMatches on
// random and adversarial traces (poles, the antimeridian, dense clusters,
// duplicate timestamps, the same place at different times, distances at
// the threshold to the centimetre), on grids where every run is dense and
// where none is; bound_test.go checks the bounds themselves.
//
// # Side channels
//
// Queries are not oblivious: which segments, table entries and points a
// query reads depends on where and when the device was, and a match reads
// more than a miss. A host that observes the enclave's memory accesses
// (page faults, cache timing) can learn which cells and slots a device
// visited, which is close to its trace. The TEE does not hide this; this
// package does nothing against it beyond keeping the data and answers
// inside the enclave. An oblivious scan costs a full pass over the index
// per check, as the brute force does (BenchmarkBruteForce).
//
// # Measuring
//
// Performance is measured on the synthetic traces of package gpsbench,
// not recorded here. BenchmarkQuery gives checks a second and bytes a
// point at each -size, BenchmarkBruteForce the baseline, BenchmarkQueryLive
// the cost of uncompacted generations, and BenchmarkGrid the grids New
// chooses between:
//
//	go test -run='^$' -bench=Query ./internal/gpsindex -args -size=1e6
//	go test -run='^$' -bench=Grid ./internal/gpsindex
//
// "conftrace bench gps" runs the same measurement (gpsbench.Run) with
// sizes, towns and a CPU profile as flags.
//
// # Reading the code
//
// index.go holds the Index's lifecycle (Add, Load, Compact, Drop,
// snapshots); segment.go the layout a segment is built in; grid.go how a
// position maps to cells, leaves and keys; query.go the query, from the
// device's fixes down to the runs and leaves it visits; scan.go the scan
// of a run's points and the settling of candidates; bound.go the lower
// and upper bounds that make the pruning exact; cache.go what a query
// remembers from one fix to the next; hugepage_linux.go the huge-page
// advice.
package gpsindex
