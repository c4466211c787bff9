package luks2

import (
	"maps"
	"slices"
	"strconv"

	"github.com/atrest/atrest/pkg/luks2/internal/ojson"
	"github.com/atrest/atrest/pkg/luks2/kdf"
)

// Header is a validated LUKS2 header: the binary fields of the copy that was
// chosen and the typed JSON metadata. Fields atrest does not interpret are
// kept (in their order) and written back unchanged.
//
// A Header read from a device is a snapshot: change it only through Update,
// which validates every change and commits it crash-safely.
type Header struct {
	// SeqID is the sequence id ("epoch"), raised by every write.
	SeqID uint64
	// UUID is the volume UUID, e.g. "0b5d0f3a-...".
	UUID string
	// Label and Subsystem are free-form labels (at most 47 bytes each).
	Label, Subsystem string
	// ChecksumAlg names the header checksum hash ("sha256").
	ChecksumAlg string
	// MetadataSize is the size of one header copy: binary header plus JSON
	// area (16 KiB by default).
	MetadataSize uint64

	Keyslots map[int]*Keyslot
	Tokens   map[int]*Token
	Segments map[int]*Segment
	Digests  map[int]*Digest
	Config   Config

	// Copies says how each on-disk copy looked when the header was read.
	Copies [2]CopyStatus
	// Data says whether the device holds the data segment: Data.Err is
	// set when it was truncated to its header (or below the segment).
	Data DataStatus

	salts [2][saltLen]byte
	raw   *ojson.Value // top-level object, for members atrest ignores
	fresh bool         // made by New, not yet on a device
	// The chosen copy's binary header and JSON area as read, so that Repair
	// writes the other copy byte for byte as cryptsetup does.
	readBin  binHeader
	readArea []byte
	// other is the other copy when it is valid too. It may be older and
	// name keyslot areas the chosen copy no longer uses: a reader falls
	// back to it if the chosen copy is damaged, so those areas are not
	// free (referencedAreas).
	other *Header
	// devSize is the device's size when the header was read or committed.
	// image holds both copies' bytes, [0, MetadataSize) and [MetadataSize,
	// 2*MetadataSize), as read (when both were valid with one sequence
	// id) or as Commit wrote them; nil otherwise. A device of devSize
	// bytes that holds them reads as this header (reread).
	devSize int64
	image   [2][]byte
}

// CopyStatus describes one on-disk header copy.
type CopyStatus struct {
	// Offset is where the copy was looked for (or found).
	Offset uint64
	// Valid is true when the copy passed every check.
	Valid bool
	// SeqID is the copy's sequence id when its binary header was readable.
	SeqID uint64
	// Err says why the copy is unusable; nil when Valid.
	Err error
}

// Priority is a keyslot's priority when unlocking with any keyslot.
type Priority int

// Keyslot priorities, as cryptsetup defines them.
const (
	// PriorityIgnore: never tried unless asked for by number.
	PriorityIgnore Priority = 0
	// PriorityNormal is the default.
	PriorityNormal Priority = 1
	// PriorityPrefer: tried before normal keyslots.
	PriorityPrefer Priority = 2
)

// String names the priority as cryptsetup's luksDump does.
func (p Priority) String() string {
	switch p {
	case PriorityIgnore:
		return "ignored"
	case PriorityNormal:
		return "normal"
	case PriorityPrefer:
		return "preferred"
	}
	return "priority(" + strconv.Itoa(int(p)) + ")"
}

// Keyslot is one entry of the keyslots section.
type Keyslot struct {
	ID int
	// Type is "luks2" for passphrase keyslots; "reencrypt" and unknown
	// types are kept but cannot be opened.
	Type string
	// KeySize is the length of the volume key this keyslot stores.
	KeySize  int
	Priority Priority
	KDF      kdf.Params
	AF       AF
	Area     Area
	raw      *ojson.Value
}

// AF is a keyslot's anti-forensic splitter.
type AF struct {
	Type    string // "luks1"
	Stripes int
	Hash    string
}

// Area is where a keyslot's encrypted split key lives.
type Area struct {
	Type       string // "raw"
	Offset     uint64 // bytes from the device start
	Size       uint64
	Encryption string // e.g. "aes-xts-plain64"
	KeySize    int
}

// Segment is one entry of the segments section; atrest volumes have one
// crypt segment.
type Segment struct {
	ID   int
	Type string // "crypt"
	// Offset is where the segment starts, in bytes.
	Offset uint64
	// Size is the segment length in bytes; 0 when Dynamic.
	Size uint64
	// Dynamic means the segment runs to the end of the device.
	Dynamic    bool
	IVTweak    uint64
	Encryption string // e.g. "aes-xts-plain64"
	SectorSize uint32
	// Integrity is the dm-integrity type, empty without integrity.
	Integrity string
	Flags     []string
	raw       *ojson.Value
}

// Digest verifies volume keys: PBKDF2 over the key, compared with Value.
type Digest struct {
	ID         int
	Type       string // "pbkdf2"
	Keyslots   []int
	Segments   []int
	Hash       string
	Iterations uint32
	Salt       []byte
	Value      []byte
	raw        *ojson.Value
}

// Config is the config section.
type Config struct {
	// JSONSize is the JSON area size of one copy (MetadataSize - 4096).
	JSONSize uint64
	// KeyslotsSize is the size of the keyslots area that follows the two
	// header copies.
	KeyslotsSize uint64
	// Flags are the persistent activation flags, e.g. "allow-discards".
	Flags []string
	// Requirements are mandatory requirements; atrest meets none.
	Requirements []string
	raw          *ojson.Value
}

// Persistent activation flags cryptsetup 2.6 knows (config.flags).
const (
	FlagAllowDiscards       = "allow-discards"
	FlagSameCPUCrypt        = "same-cpu-crypt"
	FlagSubmitFromCryptCPUs = "submit-from-crypt-cpus"
	FlagNoJournal           = "no-journal"
	FlagNoReadWorkqueue     = "no-read-workqueue"
	FlagNoWriteWorkqueue    = "no-write-workqueue"
)

// KnownFlags lists the persistent flags in cryptsetup's order.
var KnownFlags = []string{FlagAllowDiscards, FlagSameCPUCrypt, FlagSubmitFromCryptCPUs, FlagNoJournal, FlagNoReadWorkqueue, FlagNoWriteWorkqueue}

// AreasEnd is the end of the keyslots area: both header copies plus the
// keyslots area. A header backup covers exactly [0, AreasEnd).
func (h *Header) AreasEnd() uint64 {
	return 2*(h.Config.JSONSize+BinaryHeaderSize) + h.Config.KeyslotsSize
}

// referencedAreas returns the keyslot areas a reader of the device may use:
// those of h and those of the other valid copy it was read with.
func (h *Header) referencedAreas() []Area {
	var out []Area
	for _, c := range []*Header{h, h.other} {
		if c == nil {
			continue
		}
		for _, k := range c.Keyslots {
			out = append(out, k.Area)
		}
	}
	return out
}

// KeyslotIDs returns the keyslot numbers in ascending order.
func (h *Header) KeyslotIDs() []int { return slices.Sorted(maps.Keys(h.Keyslots)) }

// TokenIDs returns the token numbers in ascending order.
func (h *Header) TokenIDs() []int { return slices.Sorted(maps.Keys(h.Tokens)) }

// NeedsRepair reports whether one copy is damaged or older than the other.
func (h *Header) NeedsRepair() bool {
	return !h.Copies[0].Valid || !h.Copies[1].Valid || h.Copies[0].SeqID != h.Copies[1].SeqID
}

// UnmetRequirements returns an error wrapping ErrUnmetRequirements when the
// header lists mandatory requirements.
func (h *Header) UnmetRequirements() error {
	if len(h.Config.Requirements) == 0 {
		return nil
	}
	return &RequirementsError{Names: slices.Clone(h.Config.Requirements)}
}

// DigestForKeyslot returns the digest that lists keyslot id.
func (h *Header) DigestForKeyslot(id int) *Digest {
	for _, d := range h.sortedDigests() {
		if slices.Contains(d.Keyslots, id) {
			return d
		}
	}
	return nil
}

// DigestForSegment returns the digest that lists segment id.
func (h *Header) DigestForSegment(id int) *Digest {
	for _, d := range h.sortedDigests() {
		if slices.Contains(d.Segments, id) {
			return d
		}
	}
	return nil
}

func (h *Header) sortedDigests() []*Digest {
	out := make([]*Digest, 0, len(h.Digests))
	for _, id := range slices.Sorted(maps.Keys(h.Digests)) {
		out = append(out, h.Digests[id])
	}
	return out
}

// Clone returns a deep copy.
func (h *Header) Clone() *Header {
	c := *h
	c.image = [2][]byte{} // a clone is changed: no device holds it
	c.raw = h.raw.Clone()
	c.Keyslots = make(map[int]*Keyslot, len(h.Keyslots))
	for id, k := range h.Keyslots {
		kc := *k
		kc.KDF.Salt = slices.Clone(k.KDF.Salt)
		kc.raw = k.raw.Clone()
		c.Keyslots[id] = &kc
	}
	c.Tokens = make(map[int]*Token, len(h.Tokens))
	for id, t := range h.Tokens {
		c.Tokens[id] = t.clone()
	}
	c.Segments = make(map[int]*Segment, len(h.Segments))
	for id, s := range h.Segments {
		sc := *s
		sc.Flags = slices.Clone(s.Flags)
		sc.raw = s.raw.Clone()
		c.Segments[id] = &sc
	}
	c.Digests = make(map[int]*Digest, len(h.Digests))
	for id, d := range h.Digests {
		dc := *d
		dc.Keyslots = slices.Clone(d.Keyslots)
		dc.Segments = slices.Clone(d.Segments)
		dc.Salt = slices.Clone(d.Salt)
		dc.Value = slices.Clone(d.Value)
		dc.raw = d.raw.Clone()
		c.Digests[id] = &dc
	}
	c.Config.Flags = slices.Clone(h.Config.Flags)
	c.Config.Requirements = slices.Clone(h.Config.Requirements)
	c.Config.raw = h.Config.raw.Clone()
	return &c
}
