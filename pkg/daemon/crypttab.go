package daemon

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
)

// crypttabPath is systemd-cryptsetup's table (crypttab(5)).
const crypttabPath = "/etc/crypttab"

// crypttab is the set of devices /etc/crypttab names: their LUKS UUIDs
// (UUID=...) and their paths, symlinks resolved. systemd-cryptsetup opens
// those (a TPM keyslot atrest enrolled, `tpm2-device=auto`); if atrestd
// opened them too, one of the two would fail on a busy device, so
// atrestd leaves them alone.
type crypttab struct {
	uuids, paths map[string]bool
}

// readCrypttab reads path; a missing or unreadable file names nothing.
func readCrypttab(path string) crypttab {
	c := crypttab{uuids: map[string]bool{}, paths: map[string]bool{}}
	f, err := os.Open(path)
	if err != nil {
		return c
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		dev := fields[1]
		if u, ok := strings.CutPrefix(dev, "UUID="); ok {
			c.uuids[strings.ToLower(strings.Trim(u, `"`))] = true
			continue
		}
		if u, ok := strings.CutPrefix(dev, "/dev/disk/by-uuid/"); ok {
			c.uuids[strings.ToLower(u)] = true
		}
		c.paths[resolve(dev)] = true
	}
	return c
}

// names reports whether the table names the volume with uuid on device.
func (c crypttab) names(uuid, device string) bool {
	return c.uuids[strings.ToLower(uuid)] || c.paths[resolve(device)]
}

// resolve follows symlinks (/dev/disk/by-*), keeping p when it cannot.
func resolve(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}
