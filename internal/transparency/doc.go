// Package transparency renders the backend's public page, served at "/":
// what anyone can read about the backend without tools. It shows the kind
// of TEE and the measurement of the code, what the evidence says about the
// platform's TCB and how the attested policy's rules judge it, the
// attestation's validity, keys and release statement, the attested policy
// in words (health authorities, retention, matching and risk rules, answer
// detail, GPS thresholds, GAEN export keys, the governance set that admits
// successors, the operator contact), the public statistics as SVG bar
// charts ([BarChart]), and the exact commands that rebuild the measured
// image and verify the running backend.
//
// Everything on the page comes from the attestation bundle the backend
// serves (the same bundle as /v1/attestation) and from the binary itself
// (the Go release and platform it was built for), with two exceptions: the
// backend's URL in the commands, which is the Host the request named, and
// the statistics, which the enclave released (read at most every 5
// minutes, since reading them scans the store). The page is rendered
// again whenever the bundle changes (server.SetBundle) or the statistics
// do; only the commands are filled in per request.
//
// To show what the evidence proves, the page verifies the bundle's own
// evidence with the verifiers phones use, as of the bundle's issue, and
// judges the platform's TCB by the policy's rules with the same code
// phones run (attest.Expectations.CheckTCB); it states no TCB status that
// nothing judged. The simulated TEE is named as such, at the top, in
// words that say it protects nothing.
//
// Known limits, said on the page too: the host serves the page and could
// alter it, so it proves nothing; only `conftrace verify` on the reader's
// own machine does. The scheme of the printed URL is a guess: https, but
// http for loopback hosts, since conftraced serves plain HTTP with TLS put
// in front of it. A Host that is not a plain host name or address (with
// an optional port) is not printed at all; the page prints "URL" instead.
// The page is plain HTML and CSS with no JavaScript; its Content Security
// Policy allows only its own style sheet, pinned by hash.
package transparency
