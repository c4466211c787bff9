package dmcrypt

import (
	"fmt"
	"strings"

	"github.com/atrest/atrest/pkg/secret"
)

const (
	// maxNameLen is DM_NAME_LEN less the terminating NUL.
	maxNameLen = 127
	// maxUUIDLen is DM_UUID_LEN less the terminating NUL; longer dm UUIDs
	// are truncated, as cryptsetup does.
	maxUUIDLen = 128
	// dmUUIDPrefix marks a LUKS2 mapping for lsblk, cryptsetup and systemd.
	dmUUIDPrefix = "CRYPT-LUKS2-"
)

// DMUUID returns the dm UUID cryptsetup gives the LUKS2 volume luksUUID
// mapped as name: CRYPT-LUKS2-<uuid without dashes>-<name>, cut to 128
// bytes.
func DMUUID(luksUUID, name string) (string, error) {
	hex, err := compactUUID(luksUUID)
	if err != nil {
		return "", err
	}
	u := dmUUIDPrefix + hex + "-" + name
	if len(u) > maxUUIDLen {
		u = u[:maxUUIDLen]
	}
	return u, nil
}

// compactUUID checks an RFC 4122 text UUID and drops its dashes.
func compactUUID(u string) (string, error) {
	bad := fmt.Errorf("%w: UUID %q is not of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", ErrInvalidParams, u)
	if len(u) != 36 {
		return "", bad
	}
	var b strings.Builder
	for i, c := range u {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return "", bad
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
			b.WriteRune(c)
		default:
			return "", bad
		}
	}
	return b.String(), nil
}

// checkName enforces what device-mapper and /dev/mapper accept as a name.
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty mapping name", ErrInvalidParams)
	case len(name) > maxNameLen:
		return fmt.Errorf("%w: mapping name longer than %d bytes", ErrInvalidParams, maxNameLen)
	case name == "." || name == ".." || name == "control":
		return fmt.Errorf("%w: %q is not a usable mapping name", ErrInvalidParams, name)
	}
	for _, c := range name {
		if c == '/' || c <= ' ' || c == 0x7f {
			return fmt.Errorf("%w: mapping name %q contains a slash, space or control character", ErrInvalidParams, name)
		}
	}
	return nil
}

// checkKey applies this package's meaning of a wrong key (see the package
// doc) for aes-xts-plain64: two AES-128, AES-192 or AES-256 keys that are
// not equal.
func checkKey(k *secret.Key) error {
	n := k.Len()
	if n == 0 {
		return fmt.Errorf("%w: no key or the key was wiped", ErrKeyRejected)
	}
	if n != 32 && n != 48 && n != 64 {
		return fmt.Errorf("%w: %d-byte key; aes-xts-plain64 takes 32, 48 or 64 bytes", ErrKeyRejected, n)
	}
	b := k.Bytes()
	same := byte(0)
	for i := 0; i < n/2; i++ {
		same |= b[i] ^ b[n/2+i]
	}
	if same == 0 {
		return fmt.Errorf("%w: the two XTS key halves are equal (an all-zero key?)", ErrKeyRejected)
	}
	return nil
}

// validate checks p before anything touches the kernel.
func (p *Params) validate() error {
	if err := checkName(p.Name); err != nil {
		return err
	}
	if _, err := compactUUID(p.UUID); err != nil {
		return err
	}
	if p.Device == "" && p.Backing == nil {
		return fmt.Errorf("%w: no backing device", ErrInvalidParams)
	}
	if p.Cipher != "" && p.Cipher != CipherAESXTSPlain64 {
		return fmt.Errorf("%w: cipher %q; only %s is supported", ErrInvalidParams, p.Cipher, CipherAESXTSPlain64)
	}
	switch p.SectorSize {
	case 0, 512, 1024, 2048, 4096:
	default:
		return fmt.Errorf("%w: sector size %d; use 512, 1024, 2048 or 4096", ErrInvalidParams, p.SectorSize)
	}
	if p.Flags&^(AllowDiscards|NoReadWorkqueue|NoWriteWorkqueue) != 0 {
		return fmt.Errorf("%w: unknown flags %#x", ErrInvalidParams, uint8(p.Flags))
	}
	return checkKey(p.Key)
}

// sectorSize returns the encryption sector size, 512 when unset.
func (p *Params) sectorSize() uint32 {
	if p.SectorSize == 0 {
		return 512
	}
	return p.SectorSize
}
