package enclave

import (
	"fmt"
	"math"

	"github.com/conftrace/conftrace/contactlog"
	"github.com/conftrace/conftrace/internal/calendar"
)

// applyJournal applies one journal record when the enclave starts: an
// upload's part goes into the match indexes, an upload's mark onto its
// result. A part that does not decode is reported and skipped.
func (e *Enclave) applyJournal(kind byte, day calendar.Day, id [16]byte, data []byte) error {
	switch kind {
	case journalUploaded:
		if res, ok := e.results[string(id[:])]; ok {
			res.uploaded, res.durable = true, true
		}
		return nil
	case journalUpload:
	default:
		e.log.Error("journal record of an unknown kind; ignored", "kind", kind)
		return nil
	}
	// Checked when it was uploaded: the limits only bound what a corrupt
	// record could make the enclave allocate.
	part, err := contactlog.ParseReport(data, contactlog.Limits{MaxKeys: contactlog.MaxKeys, MaxSightings: math.MaxInt32})
	if err != nil {
		e.log.Error("stored upload does not decode; ignored", "day", day, "err", err)
		return nil
	}
	defer part.Clear()
	recip, oneSided, err := e.entries(part, day)
	if err != nil {
		e.log.Error("stored upload does not derive; ignored", "day", day, "err", err)
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
