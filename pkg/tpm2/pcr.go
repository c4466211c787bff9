package tpm2

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// Bank is a PCR bank as systemd's tokens spell it.
type Bank string

// The banks systemd 252 supports.
const (
	SHA256 Bank = "sha256"
	SHA1   Bank = "sha1"
)

// MaxPCR is one past the highest PCR index of a PC client TPM (24 PCRs).
const MaxPCR = 24

func (b Bank) alg() (tpm2.TPMIAlgHash, error) {
	switch b {
	case SHA256:
		return tpm2.TPMAlgSHA256, nil
	case SHA1:
		return tpm2.TPMAlgSHA1, nil
	}
	return 0, fmt.Errorf("%w: PCR bank %q (systemd 252 knows sha256 and sha1)", ErrUnsupported, string(b))
}

// checkPCRs returns pcrs sorted and without duplicates, or an error if one
// is outside [0, MaxPCR).
func checkPCRs(pcrs []int) ([]int, error) {
	out := slices.Clone(pcrs)
	slices.Sort(out)
	out = slices.Compact(out)
	for _, p := range out {
		if p < 0 || p >= MaxPCR {
			return nil, fmt.Errorf("tpm2: PCR %d outside 0…%d", p, MaxPCR-1)
		}
	}
	return out, nil
}

// checkSelection checks a bank and PCR list and returns the bank's
// algorithm and the PCRs sorted.
func checkSelection(bank Bank, pcrs []int) (tpm2.TPMIAlgHash, []int, error) {
	alg, err := bank.alg()
	if err != nil {
		return 0, nil, err
	}
	pcrs, err = checkPCRs(pcrs)
	return alg, pcrs, err
}

// selection is the TPML_PCR_SELECTION systemd builds: one bank, a 3-byte
// bitmap (24 PCRs). Its exact bytes enter the policy digest.
func selection(alg tpm2.TPMIAlgHash, pcrs []int) tpm2.TPMLPCRSelection {
	bits := make([]byte, MaxPCR/8)
	for _, p := range pcrs {
		bits[p/8] |= 1 << (p % 8)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: alg, PCRSelect: bits}}}
}

// ReadPCRs returns the current values of pcrs in bank, by PCR index.
func (t *TPM) ReadPCRs(bank Bank, pcrs []int) (map[int][]byte, error) {
	alg, pcrs, err := checkSelection(bank, pcrs)
	if err != nil {
		return nil, err
	}
	out := make(map[int][]byte, len(pcrs))
	// A TPM returns at most 8 digests per PCR_Read: ask again for the rest.
	for len(out) < len(pcrs) {
		var want []int
		for _, p := range pcrs {
			if _, ok := out[p]; !ok {
				want = append(want, p)
			}
		}
		rsp, err := (tpm2.PCRRead{PCRSelectionIn: selection(alg, want)}).Execute(t.t)
		if err != nil {
			return nil, fmt.Errorf("tpm2: read PCRs: %w", err)
		}
		var got []int
		for _, s := range rsp.PCRSelectionOut.PCRSelections {
			if s.Hash != alg {
				continue
			}
			for i, b := range s.PCRSelect {
				for bit := range 8 {
					if b&(1<<bit) != 0 {
						got = append(got, i*8+bit)
					}
				}
			}
		}
		if len(got) == 0 || len(got) != len(rsp.PCRValues.Digests) {
			return nil, fmt.Errorf("%w: the TPM has no %s bank for PCRs %v", ErrUnsupported, bank, want)
		}
		for i, p := range got {
			out[p] = rsp.PCRValues.Digests[i].Buffer
		}
	}
	return out, nil
}

// PolicyDigest computes the policy digest systemd 252 stores as
// tpm2-policy-hash: a SHA-256 policy of TPM2_PolicyPCR over pcrs of bank
// with their values, followed by TPM2_PolicyAuthValue when pin is set.
// values must hold every PCR of pcrs.
func PolicyDigest(bank Bank, pcrs []int, values map[int][]byte, pin bool) ([]byte, error) {
	alg, pcrs, err := checkSelection(bank, pcrs)
	if err != nil {
		return nil, err
	}
	// pcrDigest: the session's hash over the PCR values in selection order.
	h := sha256.New()
	for _, p := range pcrs {
		v, ok := values[p]
		if !ok {
			return nil, fmt.Errorf("tpm2: no value for PCR %d", p)
		}
		h.Write(v)
	}
	pcrDigest := h.Sum(nil)
	digest := make([]byte, sha256.Size)
	digest = extendPolicy(digest, tpm2.TPMCCPolicyPCR, tpm2.Marshal(selection(alg, pcrs)), pcrDigest)
	if pin {
		digest = extendPolicy(digest, tpm2.TPMCCPolicyAuthValue)
	}
	return digest, nil
}

// extendPolicy is policyDigest' = H(policyDigest || commandCode || args...).
func extendPolicy(digest []byte, cc tpm2.TPMCC, args ...[]byte) []byte {
	h := sha256.New()
	h.Write(digest)
	_ = binary.Write(h, binary.BigEndian, uint32(cc))
	for _, a := range args {
		h.Write(a)
	}
	return h.Sum(nil)
}

// unenforced reports whether every value is all zeros or all ones: PCRs
// that no firmware measured into, so a policy over them binds to nothing
// (systemd warns "PCR policy effectively unenforced").
func unenforced(values map[int][]byte) bool {
	for _, v := range values {
		if !bytes.Equal(v, make([]byte, len(v))) && !bytes.Equal(v, bytes.Repeat([]byte{0xff}, len(v))) {
			return false
		}
	}
	return true
}

// PCRsMatch reports whether the PCRs s is sealed to hold the values it was
// sealed with, by computing the policy digest from today's values: what
// status shows, without asking the TPM to unseal (so without touching its
// dictionary-attack counter).
func (t *TPM) PCRsMatch(s *Sealed) (bool, error) {
	values, err := t.ReadPCRs(s.Bank, s.PCRs)
	if err != nil {
		return false, err
	}
	d, err := PolicyDigest(s.Bank, s.PCRs, values, s.PIN)
	if err != nil {
		return false, err
	}
	return bytes.Equal(d, s.PolicyHash), nil
}
