// Package replicatest tests conftraced as an operator runs it for a
// national service: several replicas, each a conftraced process built from
// cmd/conftraced, over one PostgreSQL database, with phones reaching them
// through the real client over Oblivious HTTP. It holds tests only:
//
//   - TestReplicas starts three replicas (the second and third obtain the
//     store's key-encryption key from the first), drives a bounded load of
//     uploads and exposure checks across them, kills one with SIGKILL in
//     the middle of it and starts it again on a replaced machine, then
//     requires that no acknowledged upload was lost and that every replica
//     gives every phone the same answer; and that a replica refuses to
//     start on an older copy of the database restored by the host.
//   - TestUpgrade runs the upgrade path: a second build, which the
//     governance set signed as the successor, obtains the key from the
//     running build and matches what was uploaded under it; builds the set
//     did not admit are refused.
//
// They need PostgreSQL and take tens of seconds, so they skip under
// -short and without a server. bash scripts/test.sh starts a throwaway
// server and runs them; or set CONFTRACE_TEST_POSTGRES to a postgres:// URL
// whose user may create schemas (package pgtest) and run
//
//	go test ./internal/replicatest
package replicatest
