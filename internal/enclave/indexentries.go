package enclave

// IndexEntries returns how many entries the match indexes hold: the
// uploaded sightings and the identifiers of uploaded and imported daily
// keys, of every order. It is for the operator's metrics, which coarsen it
// (package opsmetrics): read on a request, its change would tell an upload
// from a check. It does not take e.mu: each index counts safely on its
// own, and the order indexes are made once, at Open.
func (e *Enclave) IndexEntries() int {
	n := e.index.Len() + e.oneSided.Len()
	for i := range e.orders.recip {
		n += e.orders.recip[i].Len() + e.orders.oneSided[i].Len()
	}
	return n
}
