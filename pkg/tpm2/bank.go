package tpm2

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// bestBank picks the PCR bank for pcrs as systemd 252 does
// (tpm2_get_best_pcr_bank) when none is configured: among the sha256 and
// sha1 banks that have all 24 PCRs allocated, sha256 if one of the selected
// PCRs is initialised there (neither all zeros nor all ones), else sha1 if
// so, else sha256, else sha1.
func (t *TPM) bestBank(pcrs []int) (Bank, error) {
	rsp, err := (tpm2.GetCapability{Capability: tpm2.TPMCapPCRs, PropertyCount: 1}).Execute(t.t)
	if err != nil {
		return "", fmt.Errorf("tpm2: read the TPM's PCR banks: %w", err)
	}
	assigned, err := rsp.CapabilityData.Data.AssignedPCR()
	if err != nil {
		return "", fmt.Errorf("tpm2: read the TPM's PCR banks: %w", err)
	}
	var supported, initialised []Bank
	for _, s := range assigned.PCRSelections {
		var bank Bank
		switch s.Hash {
		case tpm2.TPMAlgSHA256:
			bank = SHA256
		case tpm2.TPMAlgSHA1:
			bank = SHA1
		default:
			continue
		}
		if !allPCRs(s.PCRSelect) {
			continue
		}
		supported = append(supported, bank)
		values, err := t.ReadPCRs(bank, pcrs)
		if err != nil {
			return "", err
		}
		if len(pcrs) > 0 && !unenforced(values) {
			initialised = append(initialised, bank)
		}
	}
	for _, set := range [][]Bank{initialised, supported} {
		for _, want := range []Bank{SHA256, SHA1} {
			for _, b := range set {
				if b == want {
					return b, nil
				}
			}
		}
	}
	return "", fmt.Errorf("%w: the TPM has neither a sha256 nor a sha1 bank of 24 PCRs", ErrUnsupported)
}

// allPCRs reports whether a bitmap allocates all of PCRs 0–23.
func allPCRs(bits []byte) bool {
	if len(bits) < MaxPCR/8 {
		return false
	}
	for _, b := range bits[:MaxPCR/8] {
		if b != 0xff {
			return false
		}
	}
	return true
}
