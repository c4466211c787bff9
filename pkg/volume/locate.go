package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/recoverykey"
	"github.com/atrest/atrest/pkg/token"
)

// sysBlock is where the kernel lists block devices; a variable for tests.
var sysBlock = "/sys/class/block"

// Find resolves ref to a volume: a device path (/dev/..., or an image
// file), a LUKS2 UUID (optionally written UUID=...), or a volume name — a
// name from the configuration, an open mapping, or the name recorded in an
// atrest token on any block device.
func (m *Manager) Find(ctx context.Context, ref string) (*Volume, error) {
	return m.Finder().Find(ctx, ref)
}

// A Finder resolves volume references as Manager.Find does, reading the
// headers of every block device (Scan) at most once for any number of
// references: a command naming sixteen volumes costs one scan, not
// sixteen. It sees the devices as they were at its first scan, so it is
// meant for one command.
type Finder struct {
	m       *Manager
	scanned bool
	vols    []*Volume
}

// Finder returns a new Finder.
func (m *Manager) Finder() *Finder { return &Finder{m: m} }

// Find resolves ref (see Manager.Find).
func (f *Finder) Find(ctx context.Context, ref string) (*Volume, error) {
	m := f.m
	switch {
	case ref == "":
		return nil, fmt.Errorf("%w: empty volume reference", ErrNotFound)
	case strings.HasPrefix(ref, "/"):
		return m.load(ctx, ref)
	case isUUID(strings.TrimPrefix(ref, "UUID=")):
		return f.findBy(ctx, ref, func(v *Volume) bool {
			return strings.EqualFold(v.UUID(), strings.TrimPrefix(ref, "UUID="))
		})
	}
	for i := range m.cfg.Volumes {
		c := &m.cfg.Volumes[i]
		if c.Name != ref {
			continue
		}
		if c.Device != "" {
			return m.load(ctx, c.Device)
		}
		return f.Find(ctx, "UUID="+c.UUID)
	}
	if st, err := dmcrypt.Inspect(ref); err == nil && st.Crypt != nil {
		if dev, err := devPath(st.Crypt.Device); err == nil {
			if v, err := m.load(ctx, dev); err == nil {
				return v, nil
			}
		}
	}
	return f.findBy(ctx, ref, func(v *Volume) bool { return v.Name == ref })
}

func (f *Finder) findBy(ctx context.Context, ref string, match func(*Volume) bool) (*Volume, error) {
	if !f.scanned {
		f.vols, _ = f.m.Scan(ctx)
		f.scanned = true
	}
	var found []*Volume
	for _, v := range f.vols {
		if match(v) {
			found = append(found, v)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%w: no LUKS2 volume matches %q", ErrNotFound, ref)
	case 1:
		return found[0], nil
	}
	devs := make([]string, len(found))
	for i, v := range found {
		devs[i] = v.Device
	}
	return nil, fmt.Errorf("%w: %q matches %d volumes (%s); name a device instead", ErrNameInUse, ref, len(found), strings.Join(devs, ", "))
}

// Scan reads every block device that carries a LUKS2 header, plus the
// devices of configured volumes, in that order. Devices that cannot be
// read are reported in the error slice and skipped. The headers are read
// side by side (scanReaders at once): a read from a loop device or a disk
// waits on the device rather than the CPU, and a node with a thousand
// volumes would otherwise wait for each in turn.
func (m *Manager) Scan(ctx context.Context) ([]*Volume, []error) {
	var paths []string
	seen := map[string]bool{}
	configured := map[string]bool{}
	add := func(path string) string {
		real, err := filepath.EvalSymlinks(path)
		if err != nil || seen[real] {
			return real
		}
		seen[real] = true
		paths = append(paths, real)
		return real
	}
	for _, c := range m.cfg.Volumes {
		if c.Device != "" {
			configured[add(c.Device)] = true
		}
	}
	for _, dev := range blockDevices() {
		add(dev)
	}
	vols := make([]*Volume, len(paths))
	errs := make([]error, len(paths))
	var wg sync.WaitGroup
	sem := make(chan struct{}, scanReaders)
	for i, path := range paths {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			// A configured volume's disk that fails its reads is said
			// to (by the full read's error), not left out as if it held
			// no volume.
			if found, err := luksMagic(path); found || err != nil && configured[path] {
				vols[i], errs[i] = m.load(ctx, path)
			}
		}()
	}
	wg.Wait()
	var outVols []*Volume
	var outErrs []error
	for i := range paths {
		if errs[i] != nil {
			outErrs = append(outErrs, errs[i])
		} else if vols[i] != nil {
			outVols = append(outVols, vols[i])
		}
	}
	return outVols, outErrs
}

// scanReaders bounds the headers Scan reads at once.
const scanReaders = 16

// blockDevices lists /dev paths of the block devices worth probing: not
// empty, not RAM disks or optical drives, not atrest's or cryptsetup's
// own mappings (dm UUID CRYPT-..., an online re-encryption's helper
// devices CRYPT-SUBDEV-... included), and no suspended mapping.
func blockDevices() []string {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "zram") || strings.HasPrefix(name, "sr") || strings.HasPrefix(name, "fd") {
			continue
		}
		dir := filepath.Join(sysBlock, name)
		if size, _ := os.ReadFile(filepath.Join(dir, "size")); strings.TrimSpace(string(size)) == "0" {
			continue
		}
		if uuid, err := os.ReadFile(filepath.Join(dir, "dm", "uuid")); err == nil && bytes.HasPrefix(uuid, []byte("CRYPT-")) {
			continue
		}
		// A suspended mapping (an online re-encryption's hotzone device)
		// holds every read until it is resumed.
		if s, err := os.ReadFile(filepath.Join(dir, "dm", "suspended")); err == nil && strings.TrimSpace(string(s)) == "1" {
			continue
		}
		out = append(out, "/dev/"+strings.ReplaceAll(name, "!", "/"))
	}
	slices.Sort(out)
	return out
}

// hasLUKSMagic cheaply checks for a LUKS magic at either LUKS2 header
// location that a default-sized header uses, before the full read.
func hasLUKSMagic(path string) bool {
	found, _ := luksMagic(path)
	return found
}

// luksMagic is hasLUKSMagic, with the first read the device failed (not
// one past its end) when no magic was found.
func luksMagic(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, nil
	}
	defer f.Close()
	magic := make([]byte, 6)
	var readErr error
	for _, off := range []int64{0, 0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000} {
		n, err := f.ReadAt(magic, off)
		if n == 6 && (string(magic) == "LUKS\xba\xbe" || string(magic) == "SKUL\xba\xbe") {
			return true, nil
		}
		if err != nil && readErr == nil && !errors.Is(err, io.EOF) {
			readErr = err
		}
	}
	return false, readErr
}

// load reads the header of the device at path, and records which device
// that was: later steps refuse the path when it names another by then.
func (m *Manager) load(ctx context.Context, path string) (*Volume, error) {
	f, err := openPath(path, false)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist", ErrNotFound, path)
		}
		return nil, err
	}
	defer f.Close()
	h, err := luks2.Read(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	v, err := m.fromHeader(path, h)
	if err != nil {
		return nil, err
	}
	v.id = f.id
	return v, nil
}

// fromHeader interprets the tokens of h. An atrest token this build
// cannot parse does not make the header unusable: it is recorded in
// v.Unreadable and skipped, and its name, when valid, still names the
// volume.
func (m *Manager) fromHeader(path string, h *luks2.Header) (*Volume, error) {
	v := &Volume{Device: path, Header: h, TokenID: -1, Others: map[int]*token.Token{}}
	for _, id := range h.TokenIDs() {
		t := h.Tokens[id]
		switch t.Type {
		case token.Type:
			tok, err := token.Parse(t.JSON())
			if err != nil {
				v.Unreadable = append(v.Unreadable, UnreadableToken{ID: id, Keyslots: t.Keyslots, Err: err})
				continue
			}
			if v.Platform == nil || tok.Created.Before(v.Platform.Created) ||
				(tok.Created.Equal(v.Platform.Created) && tok.Keyslot < v.Platform.Keyslot) {
				if v.Platform != nil {
					v.Others[v.TokenID] = v.Platform
				}
				v.Platform, v.TokenID = tok, id
			} else {
				v.Others[id] = tok
			}
		case recoverykey.TokenType:
			v.Recovery = append(v.Recovery, t.Keyslots...)
		}
	}
	slices.Sort(v.Recovery)
	if v.Platform != nil {
		v.Name = v.Platform.Name
	}
	for _, u := range v.Unreadable {
		if name := token.NameOf(h.Tokens[u.ID].JSON()); v.Name == "" && config.CheckName(name) == nil {
			v.Name = name
		}
	}
	v.Config = m.configFor(path, h.UUID)
	if v.Name == "" && v.Config != nil {
		v.Name = v.Config.Name
	}
	return v, nil
}

func (m *Manager) configFor(path, uuid string) *config.Volume {
	real, _ := filepath.EvalSymlinks(path)
	i := m.cfgDevs.lookup(m.cfg.Volumes, real, uuid)
	if i < 0 {
		return nil
	}
	return &m.cfg.Volumes[i]
}

// configIndex finds configured volumes by UUID and by resolved device
// path. configFor runs for every header read; resolving every configured
// device path each time made a batch over N configured volumes cost N²
// path walks (at 1,000 volumes most of a rewrap's CPU). The resolved paths
// are kept for a second, a hit is checked by resolving that one entry
// again, and a stale hit rebuilds the index, so a symlink udev moves is
// followed within a second.
type configIndex struct {
	mu    sync.Mutex
	built time.Time
	uuids map[string]int // lower-case UUID: first entry naming it
	devs  map[string]int // resolved device path: first entry naming it
}

const configIndexTTL = time.Second

// lookup returns the index of the first volume in vols whose UUID is uuid
// or whose device resolves to real, or -1.
func (x *configIndex) lookup(vols []config.Volume, real, uuid string) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	for pass := 0; ; pass++ {
		if x.uuids == nil || time.Since(x.built) > configIndexTTL {
			x.build(vols)
		}
		i, ok := x.uuids[strings.ToLower(uuid)]
		if !ok || uuid == "" {
			i = -1
		}
		if j, ok := x.devs[real]; ok && real != "" && (i < 0 || j < i) {
			if r, err := filepath.EvalSymlinks(vols[j].Device); err == nil && r == real {
				return j
			}
			if pass == 0 {
				x.uuids = nil // moved since: resolve everything again
				continue
			}
		}
		return i
	}
}

func (x *configIndex) build(vols []config.Volume) {
	x.uuids, x.devs, x.built = map[string]int{}, map[string]int{}, time.Now()
	for i, c := range vols {
		if _, seen := x.uuids[strings.ToLower(c.UUID)]; c.UUID != "" && !seen {
			x.uuids[strings.ToLower(c.UUID)] = i
		}
		if c.Device == "" {
			continue
		}
		if r, err := filepath.EvalSymlinks(c.Device); err == nil {
			if _, seen := x.devs[r]; !seen {
				x.devs[r] = i
			}
		}
	}
}

// devPath turns "major:minor" into the device's /dev path.
func devPath(majmin string) (string, error) {
	uevent, err := os.ReadFile("/sys/dev/block/" + majmin + "/uevent")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(uevent), "\n") {
		if name, ok := strings.CutPrefix(line, "DEVNAME="); ok {
			return "/dev/" + name, nil
		}
	}
	return "", fmt.Errorf("no DEVNAME for block device %s", majmin)
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
			continue
		}
		if _, err := strconv.ParseUint(string(c), 16, 8); err != nil {
			return false
		}
	}
	return true
}

// errNotManaged says why v has no usable platform token.
func (v *Volume) errNotManaged() error {
	if len(v.Unreadable) > 0 {
		u := v.Unreadable[0]
		return fmt.Errorf("%s: %w: its atrest token %d cannot be used: %w", v.Device, ErrNotManaged, u.ID, u.Err)
	}
	return fmt.Errorf("%s: %w", v.Device, ErrNotManaged)
}
