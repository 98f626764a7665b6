package attest

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrTCBNotJudged is returned (wrapped, with the reason) when evidence
// meets expectations that require a judged platform TCB but nothing judged
// it: SGX evidence came without collateral, or TDX or SNP evidence without
// a minimum TCB to compare with. See [Expectations.AllowUnjudgedTCB].
var ErrTCBNotJudged = errors.New("attest: the platform's TCB was not judged")

// The SGX TCB statuses that Intel's collateral states, as it names them.
const (
	// TCBUpToDate: the platform and its quoting enclave have every
	// security update Intel lists. It is always accepted.
	TCBUpToDate = "UpToDate"
	// TCBSWHardeningNeeded: the platform is up to date, but the advisories
	// it names are mitigated only if the enclave's own software is
	// hardened against them.
	TCBSWHardeningNeeded = "SWHardeningNeeded"
	// TCBConfigurationNeeded: the platform is up to date, but its BIOS or
	// hardware configuration leaves it exposed to the advisories it names
	// (for example, with hyper-threading on).
	TCBConfigurationNeeded = "ConfigurationNeeded"
	// TCBConfigurationAndSWHardeningNeeded: both of the above.
	TCBConfigurationAndSWHardeningNeeded = "ConfigurationAndSWHardeningNeeded"
	// TCBOutOfDate: the platform's microcode, firmware or quoting enclave
	// lacks a security update.
	TCBOutOfDate = "OutOfDate"
	// TCBOutOfDateConfigurationNeeded: out of date and misconfigured.
	TCBOutOfDateConfigurationNeeded = "OutOfDateConfigurationNeeded"
	// TCBRevoked: Intel revoked the platform or its keys. Never accepted;
	// the SGX verifier refuses such evidence outright.
	TCBRevoked = "Revoked"
)

// TCBStatuses returns the SGX TCB statuses, from the best to the worst.
func TCBStatuses() []string {
	return []string{
		TCBUpToDate, TCBSWHardeningNeeded, TCBConfigurationNeeded,
		TCBConfigurationAndSWHardeningNeeded, TCBOutOfDate,
		TCBOutOfDateConfigurationNeeded, TCBRevoked,
	}
}

// AcceptedTCB accepts SGX evidence whose TCB status is Status, provided
// that every advisory the platform's and the quoting enclave's TCB levels
// name is listed in Advisories, as MarbleRun's manifests do: a platform
// that needs software hardening is acceptable only for the advisories the
// enclave is known to be hardened against.
type AcceptedTCB struct {
	// Status is the accepted TCB status, one of [TCBStatuses] other than
	// UpToDate (always accepted) and Revoked (never).
	Status string
	// Advisories lists the accepted advisory IDs ("INTEL-SA-00615"). Empty
	// accepts the status only from TCB levels that name no advisory.
	Advisories []string
	// AnyAdvisory accepts the status whatever advisories it comes with.
	// It suits an auditor inspecting evidence, not a phone.
	AnyAdvisory bool
}

// CheckTCB reports whether the platform's TCB, as id states it, meets the
// expectations: for SGX the TCB status and its advisories, for TDX and SNP
// the platform's TCB version against the minimum for its TEE (see the
// package documentation). Evidence whose TCB was not judged fails with an
// error wrapping [ErrTCBNotJudged] unless AllowUnjudgedTCB is set.
// Simulated evidence has no platform: it fails with [ErrSimulated] unless
// AllowSimulated is set. CheckTCB does not look at the code.
func (e Expectations) CheckTCB(id Identity) error {
	switch id.TEE {
	case Sim:
		if !e.AllowSimulated {
			return ErrSimulated
		}
		return nil
	case SGX:
		return e.checkSGXStatus(id)
	case TDX:
		names := make([]string, len(e.MinTDXTCB))
		for i := range names {
			names[i] = fmt.Sprintf("byte %d", i)
		}
		return e.checkMinimum(id, e.MinTDXTCB, names, 16)
	case SNP:
		return e.checkMinimum(id, e.MinSNPTCB, []string{"bootloader", "tee", "snp", "microcode"}, 4)
	}
	return e.unjudged(fmt.Sprintf("no way to judge %q evidence", id.TEE))
}

func (e Expectations) unjudged(why string) error {
	if e.AllowUnjudgedTCB {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrTCBNotJudged, why)
}

func (e Expectations) checkSGXStatus(id Identity) error {
	switch id.TCBStatus {
	case "":
		return e.unjudged("SGX evidence without collateral")
	case TCBUpToDate:
		return nil
	}
	var accepted []string
	anyAdvisory, listed := false, false
	for _, a := range e.AcceptedTCB {
		if a.Status == id.TCBStatus && a.Status != TCBRevoked {
			listed = true
			anyAdvisory = anyAdvisory || a.AnyAdvisory
			accepted = append(accepted, a.Advisories...)
		}
	}
	got := id.TCBStatus
	if len(id.TCBAdvisoryIDs) > 0 {
		got += " (" + strings.Join(id.TCBAdvisoryIDs, ", ") + ")"
	}
	if !listed {
		want := []string{TCBUpToDate}
		for _, a := range e.AcceptedTCB {
			if a.Status != TCBRevoked && !slices.Contains(want, a.Status) {
				want = append(want, a.Status)
			}
		}
		return &MismatchError{Field: "tcb_status", Got: got, Want: strings.Join(want, " or ")}
	}
	if anyAdvisory {
		return nil
	}
	var missing []string
	for _, a := range id.TCBAdvisoryIDs {
		if !slices.Contains(accepted, a) {
			missing = append(missing, a)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	want := "no advisory"
	if len(accepted) > 0 {
		want = "only " + strings.Join(accepted, ", ")
	}
	return &MismatchError{
		Field: "tcb_advisories",
		Got:   fmt.Sprintf("%s, of which %s not accepted", got, strings.Join(missing, ", ")),
		Want:  fmt.Sprintf("%s with %s", id.TCBStatus, want),
	}
}

// checkMinimum compares id's platform TCB with min, component by
// component; names name the components in errors.
func (e Expectations) checkMinimum(id Identity, min []byte, names []string, size int) error {
	if len(min) == 0 {
		return e.unjudged(fmt.Sprintf("%s evidence, and no minimum %s TCB to compare its TCB with", id.TEE, id.TEE))
	}
	if len(min) != size {
		return fmt.Errorf("attest: expectations: the minimum %s TCB is %d bytes, want %d bytes", id.TEE, len(min), size)
	}
	if len(id.PlatformTCB) != size {
		return &MismatchError{Field: "platform_tcb", Got: fmt.Sprintf("%d bytes", len(id.PlatformTCB)), Want: fmt.Sprintf("the %d bytes of a %s TCB", size, id.TEE)}
	}
	var low []string
	for i := range min {
		if id.PlatformTCB[i] < min[i] {
			low = append(low, fmt.Sprintf("%s %d < %d", names[i], id.PlatformTCB[i], min[i]))
		}
	}
	if low != nil {
		return &MismatchError{
			Field: "platform_tcb",
			Got:   fmt.Sprintf("%x (%s)", id.PlatformTCB, strings.Join(low, ", ")),
			Want:  fmt.Sprintf("at least %x in every component", min),
		}
	}
	return nil
}

// checkPins checks the TDX registers and SNP host data and VMPL that the
// expectations pin. A pin is a requirement: evidence of a TEE that has no
// such field does not meet it.
func (e Expectations) checkPins(id Identity) error {
	pinned := func(field string, tee TEE, got, want []byte) error {
		if id.TEE != tee {
			return &MismatchError{Field: field, Got: fmt.Sprintf("%s evidence, which has none", id.TEE), Want: fmt.Sprintf("%s evidence with %x", tee, want)}
		}
		if !bytes.Equal(got, want) {
			return &MismatchError{Field: field, Got: hex.EncodeToString(got), Want: hex.EncodeToString(want)}
		}
		return nil
	}
	for i, want := range e.RTMRs {
		if want == nil {
			continue
		}
		if err := pinned(fmt.Sprintf("rtmr%d", i), TDX, id.RTMRs[i], want); err != nil {
			return err
		}
	}
	if e.MRConfigID != nil {
		if err := pinned("mrconfigid", TDX, id.MRConfigID, e.MRConfigID); err != nil {
			return err
		}
	}
	if e.HostData != nil {
		if err := pinned("host_data", SNP, id.HostData, e.HostData); err != nil {
			return err
		}
	}
	if e.VMPL != nil {
		switch {
		case id.TEE != SNP:
			return &MismatchError{Field: "vmpl", Got: fmt.Sprintf("%s evidence, which has none", id.TEE), Want: fmt.Sprintf("%s evidence from VMPL %d", SNP, *e.VMPL)}
		case id.VMPL != *e.VMPL:
			return &MismatchError{Field: "vmpl", Got: fmt.Sprint(id.VMPL), Want: fmt.Sprint(*e.VMPL)}
		}
	}
	return nil
}
