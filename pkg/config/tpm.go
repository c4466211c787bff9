package config

import "strings"

// TPM is the TPM that seals the KEK of `kms: tpm` (docs/tpm.md).
type TPM struct {
	// Device is "auto" (default: /dev/tpmrm0), a character device path,
	// or "swtpm:host=H,port=P" for a software TPM.
	Device string `yaml:"device"`
	// PCRs the KEK is sealed to (default [7], the Secure Boot state, as
	// systemd-cryptenroll's default).
	PCRs []int `yaml:"pcrs"`
	// Bank is sha256 or sha1; empty picks the one systemd would.
	Bank string `yaml:"bank"`
	// PIN must be false for the KEK: atrestd unseals it at boot, with no
	// one to ask (TPM keyslots with a PIN: atrest tpm enroll --pin).
	PIN bool `yaml:"pin"`
	// Reseal says what atrest open and atrestd do with a TPM keyslot whose
	// PCRs changed when the volume opened through a path that vouches for
	// the node (a network KMS, the recovery key): ResealAuto (default)
	// seals it again to today's values, ResealNever leaves it to
	// atrest tpm reseal.
	Reseal string `yaml:"reseal"`
}

// tpm.reseal values.
const (
	ResealAuto  = "auto"
	ResealNever = "never"
)

func (t *TPM) applyDefaults() {
	if t.Device == "" {
		t.Device = "auto"
	}
	if t.PCRs == nil {
		t.PCRs = []int{7}
	}
	if t.Reseal == "" {
		t.Reseal = ResealAuto
	}
}

func (t TPM) validate(bad func(field, format string, args ...any) error) error {
	d := t.Device
	if d != "auto" && d != "swtpm" && !strings.HasPrefix(d, "swtpm:") && !strings.HasPrefix(d, "/") {
		return bad("tpm.device", "%q: want auto, an absolute device path such as /dev/tpmrm0, or swtpm:host=H,port=P", d)
	}
	seen := map[int]bool{}
	for _, p := range t.PCRs {
		if p < 0 || p > 23 {
			return bad("tpm.pcrs", "PCR %d: PCRs are 0 to 23", p)
		}
		if seen[p] {
			return bad("tpm.pcrs", "PCR %d is listed twice", p)
		}
		seen[p] = true
	}
	switch t.Bank {
	case "", "sha256", "sha1":
	default:
		return bad("tpm.bank", "unknown bank %q (want sha256 or sha1, or leave it out)", t.Bank)
	}
	if t.Reseal != ResealAuto && t.Reseal != ResealNever {
		return bad("tpm.reseal", "%q: want auto or never", t.Reseal)
	}
	if t.PIN {
		return bad("tpm.pin", "the KEK of kms: tpm is unsealed at boot with no one to ask for a PIN; use a TPM keyslot with a PIN instead (atrest tpm enroll NAME --pin)")
	}
	return nil
}
