package enclave

// IndexEntries returns how many entries the match indexes hold: the
// uploaded sightings and the identifiers of uploaded and imported daily
// keys. It is for the operator's metrics, which coarsen it (package
// opsmetrics): read on a request, its change would tell an upload from a
// check. It does not take e.mu: each index counts safely on its own.
func (e *Enclave) IndexEntries() int { return e.index.Len() + e.oneSided.Len() }
