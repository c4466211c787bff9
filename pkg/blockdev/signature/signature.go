// Package signature finds and erases the on-disk signatures that say a
// device already holds something: LUKS headers, filesystems, swap, partition
// tables, LVM physical volumes, md RAID members and a few more (the list is
// in docs/preflight.md). It reads bytes only, with no external tools and no
// cgo, and it reports every signature with the byte offsets of its magic
// strings the way `wipefs` does, so that `format --force` can erase exactly
// those bytes and nothing else.
//
// Detection follows util-linux's libblkid in what it accepts, in the
// permissive mode wipefs uses (bad checksums are accepted, a protective MBR
// is not required for GPT): for a preflight, missing a signature destroys
// data, while a false alarm only asks for --force.
package signature

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Usage says what kind of thing a signature belongs to; the values are
// libblkid's USAGE names plus "partition table".
type Usage string

// Usages reported in Signature.Usage.
const (
	UsageFilesystem     Usage = "filesystem"
	UsageCrypto         Usage = "crypto"
	UsageRAID           Usage = "raid"
	UsageOther          Usage = "other"
	UsagePartitionTable Usage = "partition table"
)

// Magic is one run of identifying bytes on the device. Wipe zeroes exactly
// Len(Bytes) bytes at Offset.
type Magic struct {
	// Offset is the byte offset from the start of the device.
	Offset int64
	// Bytes are the bytes found there when the device was probed.
	Bytes []byte
	// Role tells copies apart ("primary header", "backup header"); empty
	// when the signature has a single location.
	Role string
}

// Signature is one thing found on the device.
type Signature struct {
	// Type is libblkid's name: crypto_LUKS, ext4, xfs, btrfs, swap, vfat,
	// ntfs, exfat, gpt, PMBR, dos, LVM2_member, linux_raid_member, ...
	Type    string
	Usage   Usage
	Version string
	UUID    string
	Label   string
	// Magics are every location of this signature's magic strings, in
	// ascending offset order within one probe.
	Magics []Magic
}

// String names the signature and where it is, e.g.
// "crypto_LUKS version 2 (UUID 4dbf…) at 0x0, 0x4000".
func (s Signature) String() string {
	var b strings.Builder
	if s.Usage == UsagePartitionTable {
		fmt.Fprintf(&b, "%s partition table", s.Type)
	} else {
		b.WriteString(s.Type)
	}
	if s.Version != "" {
		fmt.Fprintf(&b, " version %s", s.Version)
	}
	var ids []string
	if s.UUID != "" {
		ids = append(ids, "UUID "+s.UUID)
	}
	if s.Label != "" {
		ids = append(ids, fmt.Sprintf("label %q", s.Label))
	}
	if len(ids) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(ids, ", "))
	}
	b.WriteString(" at ")
	for i, m := range s.Magics {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%#x", m.Offset)
		if m.Role != "" {
			fmt.Fprintf(&b, " (%s)", m.Role)
		}
	}
	return b.String()
}

// IsPartitionTable reports whether erasing s changes the partition table,
// after which the kernel should re-read it.
func (s Signature) IsPartitionTable() bool { return s.Usage == UsagePartitionTable }

// Options tune Probe.
type Options struct {
	// SectorSize is the device's logical sector size, where GPT headers
	// live. GPT is probed at 512 and 4096 as well, so an image taken from a
	// 4Kn disk is not missed; 0 means "unknown".
	SectorSize int
}

// ErrTooManySignatures is returned when probing keeps finding new magic
// strings beyond any plausible count; the device is not what it seems and
// nothing should be written to it.
var ErrTooManySignatures = errors.New("signature: too many signatures (probe did not converge)")

// maxRounds bounds the hide-and-reprobe loop; each round hides at least one
// non-zero magic, and the probers know far fewer locations than this.
const maxRounds = 64

// Probe reads the device r of size bytes and returns every signature on it.
// A read error fails the whole probe: a caller must not act on a partial
// answer.
//
// Like wipefs, Probe hides each signature it finds (reads of its magic bytes
// return zeros) and probes again until nothing new appears, so signatures
// that only become visible once another is gone (the backup GPT header, the
// MBR of an NTFS boot sector, the second LUKS2 header, the other magic
// strings of FAT) are reported up front. Erasing every reported magic
// therefore leaves a device on which Probe finds nothing.
func Probe(ctx context.Context, r io.ReaderAt, size int64, opts Options) ([]Signature, error) {
	v := &view{r: r, size: size, sectorSizes: sectorSizes(opts.SectorSize)}
	var found []Signature
	for round := 0; ; round++ {
		if round == maxRounds {
			return nil, ErrTooManySignatures
		}
		var fresh []Signature
		for _, p := range probers {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			sigs, err := p(v)
			if err != nil {
				return nil, fmt.Errorf("signature: probe: %w", err)
			}
			for _, s := range sigs {
				if s = v.keepVisible(s); len(s.Magics) > 0 {
					fresh = append(fresh, s)
				}
			}
		}
		if len(fresh) == 0 {
			return found, nil
		}
		for _, s := range fresh {
			for _, m := range s.Magics {
				v.hide(m.Offset, int64(len(m.Bytes)))
			}
		}
		found = append(found, fresh...)
	}
}

// prober looks for one family of signatures in v. It returns what it finds
// in the current view (hidden ranges read as zeros) and an error only when
// the device could not be read.
type prober func(v *view) ([]Signature, error)

// probers run in libblkid's spirit: superblocks first, partition tables
// last, because the MBR probe steps aside for FAT and NTFS boot sectors.
var probers = []prober{
	probeLUKS,
	probeMD,
	probeLVM2,
	probeBcache,
	probeExt,
	probeXFS,
	probeBtrfs,
	probeF2FS,
	probeSwap,
	probeNTFS,
	probeExFAT,
	probeVFAT,
	probeISO9660,
	probeGPT,
	probePMBR,
	probeDOS,
}

func sectorSizes(ss int) []int {
	out := []int{}
	if ss >= 512 && ss&(ss-1) == 0 {
		out = append(out, ss)
	}
	for _, s := range []int{512, 4096} {
		if s != ss {
			out = append(out, s)
		}
	}
	return out
}
