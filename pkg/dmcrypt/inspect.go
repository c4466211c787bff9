package dmcrypt

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	devmapper "github.com/anatol/devmapper.go"
	"golang.org/x/sys/unix"
)

// Status describes an active mapping.
type Status struct {
	// Name, UUID (the dm UUID) and Path (/dev/mapper/Name).
	Name, UUID, Path string
	// Major and Minor are the mapping's device number.
	Major, Minor uint32
	// OpenCount is how many openers hold the mapping (a mount counts).
	OpenCount int
	// ReadOnly and Suspended mirror the device-mapper flags.
	ReadOnly, Suspended bool
	// Holders are the kernel names of devices stacked on the mapping.
	Holders []string
	// Crypt is the crypt table, or nil when the mapping is not a single
	// crypt target (it is not one of atrest's, nor cryptsetup's).
	Crypt *Table
}

// Table is a crypt target's parameters, without key material.
type Table struct {
	// Cipher is the dm-crypt cipher spec, e.g. aes-xts-plain64.
	Cipher string
	// KeySize is the key length in bytes.
	KeySize int
	// KeyDescription names the keyring key the table refers to, e.g.
	// "logon:atrest:CRYPT-LUKS2-...". It is empty when the key sits in the
	// table itself, which Inspect never reveals.
	KeyDescription string
	// IVOffset is the IV tweak, in sectors.
	IVOffset uint64
	// Device is the backing device as major:minor.
	Device string
	// OffsetSectors and SizeSectors locate the data, in 512-byte sectors.
	OffsetSectors, SizeSectors uint64
	// SectorSize is the encryption sector size in bytes.
	SectorSize uint32
	// Flags are the recognised options; Options lists the others verbatim.
	Flags   Flag
	Options []string
}

// Inspect reports the mapping name. It wraps ErrNotFound when there is
// none.
func Inspect(name string) (*Status, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	info, err := devmapper.InfoByName(name)
	if err != nil {
		return nil, dmError("query", name, err)
	}
	st := &Status{
		Name: info.Name, UUID: info.UUID, Path: NodePath(info.Name),
		Major: unix.Major(info.DevNo), Minor: unix.Minor(info.DevNo),
		OpenCount: int(info.OpenCount),
		ReadOnly:  info.Flags&unix.DM_READONLY_FLAG != 0,
		Suspended: info.Flags&unix.DM_SUSPEND_FLAG != 0,
		Holders:   holders(unix.Major(info.DevNo), unix.Minor(info.DevNo)),
	}
	targets := 0
	err = readTable(name, func(t target, params []byte) error {
		targets++
		if t.kind != "crypt" || t.start != 0 {
			return nil
		}
		tab, err := parseCrypt(params)
		if err != nil {
			return fmt.Errorf("dmcrypt: table of %s: %w", name, err)
		}
		tab.SizeSectors = t.length
		st.Crypt = tab
		return nil
	})
	if err != nil {
		return nil, err
	}
	if targets != 1 {
		st.Crypt = nil
	}
	return st, nil
}

// parseCrypt decodes crypt target parameters:
// <cipher> <key> <iv_offset> <device> <offset> [<#opts> <opt>...].
// It works on the raw bytes and never turns the key field into a string.
func parseCrypt(params []byte) (*Table, error) {
	f := bytes.Fields(params)
	if len(f) < 5 {
		return nil, fmt.Errorf("crypt parameters have %d fields, want at least 5", len(f))
	}
	t := &Table{Cipher: string(f[0]), Device: string(f[3]), SectorSize: 512}
	key := f[1]
	if len(key) > 0 && key[0] == ':' {
		// :<size>:<type>:<description>
		parts := bytes.SplitN(key[1:], []byte(":"), 3)
		if len(parts) != 3 {
			return nil, fmt.Errorf("malformed keyring key reference")
		}
		n, err := strconv.Atoi(string(parts[0]))
		if err != nil {
			return nil, fmt.Errorf("malformed keyring key size")
		}
		t.KeySize = n
		t.KeyDescription = string(parts[1]) + ":" + string(parts[2])
	} else {
		t.KeySize = len(key) / 2 // hex in the table; its bytes stay unread
	}
	var err error
	if t.IVOffset, err = strconv.ParseUint(string(f[2]), 10, 64); err != nil {
		return nil, fmt.Errorf("bad iv offset %q", f[2])
	}
	if t.OffsetSectors, err = strconv.ParseUint(string(f[4]), 10, 64); err != nil {
		return nil, fmt.Errorf("bad data offset %q", f[4])
	}
	if len(f) == 5 {
		return t, nil
	}
	n, err := strconv.Atoi(string(f[5]))
	if err != nil || n != len(f)-6 {
		return nil, fmt.Errorf("bad option count %q", f[5])
	}
	for _, o := range f[6:] {
		opt := string(o)
		if v, ok := strings.CutPrefix(opt, "sector_size:"); ok {
			ss, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("bad sector size %q", opt)
			}
			t.SectorSize = uint32(ss)
			continue
		}
		known := false
		for _, fn := range flagNames {
			if opt == fn.name {
				t.Flags |= fn.f
				known = true
			}
		}
		if !known {
			t.Options = append(t.Options, opt)
		}
	}
	return t, nil
}

// holders lists /sys/dev/block/M:m/holders.
func holders(major, minor uint32) []string {
	dir := filepath.Join("/sys/dev/block", fmt.Sprintf("%d:%d", major, minor), "holders")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// TableLines returns the live table of the mapping name, one line per target
// as `dmsetup table` prints it; a key held in the table itself (not in a
// keyring) is shown as "-".
func TableLines(name string) ([]string, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	var out []string
	err := readTable(name, func(t target, params []byte) error {
		f := strings.Fields(string(bytesWithoutKey(t.kind, params)))
		out = append(out, strings.Join(append([]string{strconv.FormatUint(t.start, 10), strconv.FormatUint(t.length, 10), t.kind}, f...), " "))
		return nil
	})
	return out, err
}

// bytesWithoutKey copies params, a crypt target's key field replaced by
// "-" unless it is a keyring reference.
func bytesWithoutKey(kind string, params []byte) []byte {
	f := bytes.Fields(params)
	if kind == "crypt" && len(f) > 1 && (len(f[1]) == 0 || f[1][0] != ':') {
		f[1] = []byte("-")
	}
	return bytes.Join(f, []byte(" "))
}

// CryptMapping describes a mapping made only of crypt targets (one for an
// ordinary volume, done and rest after an online re-encryption stopped
// between hotzones).
type CryptMapping struct {
	// Targets is the number of crypt targets and Sectors their total length.
	Targets int
	Sectors uint64
	// Flags are the first target's dm-crypt options.
	Flags Flag
}

// InspectCrypt reports the mapping name when every target of its table is
// a crypt target, and nil when one is not.
func InspectCrypt(name string) (*CryptMapping, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	m, other := &CryptMapping{}, false
	err := readTable(name, func(t target, params []byte) error {
		if t.kind != "crypt" {
			other = true
			return nil
		}
		tab, err := parseCrypt(params)
		if err != nil {
			return fmt.Errorf("dmcrypt: table of %s: %w", name, err)
		}
		if m.Targets == 0 {
			m.Flags = tab.Flags
		}
		m.Targets++
		m.Sectors += t.length
		return nil
	})
	if err != nil || other || m.Targets == 0 {
		return nil, err
	}
	return m, nil
}
