package enclave

import (
	"fmt"
	"math"

	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/internal/calendar"
	"github.com/conftrace/conftrace/internal/matchindex"
)

// applyJournal applies one journal record: an upload's part goes into the
// match indexes, an upload's mark onto its result. A part that does not
// decode is reported and skipped. A start applies every record at once
// (restoreJournal, restore.go), to the same effect.
func (e *Enclave) applyJournal(kind byte, day calendar.Day, id [16]byte, data []byte) error {
	switch kind {
	case journalUploaded:
		if res, ok := e.results[string(id[:])]; ok {
			res.uploaded, res.durable = true, true
		}
		return nil
	case journalOrderUpload, journalOrderUsed:
		return e.applyOrderRecord(kind, day, id, data)
	case journalUpload:
	default:
		e.log.Error("journal record of an unknown kind; ignored", "kind", kind)
		return nil
	}
	recip, oneSided, ok := e.decodeUpload(day, data)
	if !ok {
		return nil
	}
	if err := e.index.Add(recip); err != nil {
		return fmt.Errorf("enclave: rebuilding index: %w", err)
	}
	if err := e.oneSided.Add(oneSided); err != nil {
		return fmt.Errorf("enclave: rebuilding index: %w", err)
	}
	return nil
}

// decodeUpload returns the index entries of a stored upload's part of day.
// A part that does not decode or derive is reported, and ok is false. It
// is safe for concurrent use.
func (e *Enclave) decodeUpload(day calendar.Day, data []byte) (recip, oneSided []matchindex.Entry, ok bool) {
	// Checked when it was uploaded: the limits only bound what a corrupt
	// record could make the enclave allocate.
	part, err := contactlog.ParseReport(data, contactlog.Limits{MaxKeys: contactlog.MaxKeys, MaxSightings: math.MaxInt32})
	if err != nil {
		e.log.Error("stored upload does not decode; ignored", "day", day, "err", err)
		return nil, nil, false
	}
	defer part.Clear()
	recip, oneSided, err = e.entries(part, day)
	if err != nil {
		e.log.Error("stored upload does not derive; ignored", "day", day, "err", err)
		return nil, nil, false
	}
	return recip, oneSided, true
}
