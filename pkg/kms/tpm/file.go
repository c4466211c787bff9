package tpm

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/internal/keyfile"
	"github.com/atrest/atrest/pkg/tpm2"
)

// The sealed KEK file is JSON, root-only; it holds no secret a thief can
// use without this machine's TPM:
//
//	{"format":"atrest-tpm-kek-v1","id":HEX,"tpm2-blob":B64,"tpm2-pcrs":[7],
//	 "tpm2-pcr-bank":"sha256","tpm2-primary-alg":"ecc","tpm2-policy-hash":HEX}
//
// The tpm2-* fields mean what they mean in a systemd-tpm2 token.
const (
	fileFormat = "atrest-tpm-kek-v1"
	idLen      = 16
	maxFileLen = 64 << 10
)

type file struct {
	id     [idLen]byte
	sealed tpm2.Sealed
}

type fileJSON struct {
	Format     string `json:"format"`
	ID         string `json:"id"`
	Blob       []byte `json:"tpm2-blob"`
	PCRs       []int  `json:"tpm2-pcrs"`
	Bank       string `json:"tpm2-pcr-bank"`
	PrimaryAlg string `json:"tpm2-primary-alg"`
	PolicyHash string `json:"tpm2-policy-hash"`
}

var errExists = keyfile.ErrExists

func newFile(s tpm2.Sealed) (*file, error) {
	f := &file{sealed: s}
	if _, err := io.ReadFull(rand.Reader, f.id[:]); err != nil {
		return nil, err
	}
	return f, nil
}

// readFile reads the private file at path; a missing one wraps
// os.ErrNotExist, anything else unusable kms.ErrConfig.
func readFile(path string) (*file, error) {
	raw, err := keyfile.Read(path, maxFileLen, false)
	if err != nil {
		if isNotExist(err) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", kms.ErrConfig, err)
	}
	defer raw.Wipe()
	bad := func(why string) error {
		return fmt.Errorf("%w: %s: not an atrest TPM-sealed KEK: %s", kms.ErrConfig, path, why)
	}
	var j fileJSON
	if err := json.Unmarshal(raw.Bytes(), &j); err != nil {
		return nil, bad(err.Error())
	}
	if j.Format != fileFormat {
		return nil, bad(fmt.Sprintf("format %q", j.Format))
	}
	f := &file{sealed: tpm2.Sealed{Blob: j.Blob, PCRs: j.PCRs, Bank: tpm2.Bank(j.Bank), PrimaryAlg: tpm2.PrimaryAlg(j.PrimaryAlg)}}
	id, err := hex.DecodeString(j.ID)
	if err != nil || len(id) != idLen {
		return nil, bad("bad id")
	}
	copy(f.id[:], id)
	if f.sealed.PolicyHash, err = hex.DecodeString(j.PolicyHash); err != nil || len(j.Blob) == 0 {
		return nil, bad("bad tpm2-blob or tpm2-policy-hash")
	}
	return f, nil
}

// create writes f as a new file at path, crash-safely and exclusively.
func (f *file) create(path string) error {
	pcrs := f.sealed.PCRs
	if pcrs == nil {
		pcrs = []int{}
	}
	data, err := json.Marshal(fileJSON{
		Format: fileFormat, ID: hex.EncodeToString(f.id[:]), Blob: f.sealed.Blob, PCRs: pcrs,
		Bank: string(f.sealed.Bank), PrimaryAlg: string(f.sealed.PrimaryAlg), PolicyHash: hex.EncodeToString(f.sealed.PolicyHash),
	})
	if err != nil {
		return err
	}
	return keyfile.CreateExclusive(path, append(data, '\n'))
}

func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }

// lockFile takes an exclusive lock on path (created root-only), held
// until unlock: the renewal of one KEK by several processes.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
