package boot_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/integration/boot"
	"github.com/atrest/atrest/integration/vm"
)

// unlockScript is the pattern atrestd follows, done with cryptsetup: on
// the first boot the blank disk is formatted (minimal PBKDF: pbkdf2, 1000
// iterations), then it is opened; the mount comes from fstab.
const unlockScript = `#!/bin/sh
set -eu
dev=/dev/vdc key=/etc/atrest-test/secure.key
if ! cryptsetup isLuks "$dev"; then
	cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 \
		--pbkdf-force-iterations 1000 --hash sha512 --key-file "$key" "$dev"
	cryptsetup open --key-file "$key" "$dev" secure
	mke2fs -q -t ext4 -L secure /dev/mapper/secure
	echo "formatted $dev"
else
	cryptsetup open --key-file "$key" "$dev" secure
fi
echo "opened $dev as secure"
`

// unlockUnit is ordered the way systemd-cryptsetup-generator orders a
// local volume, so that the fstab mount of /dev/mapper/secure follows it.
const unlockUnit = `[Unit]
Description=Unlock the test volume secure
DefaultDependencies=no
IgnoreOnIsolate=true
BindsTo=dev-vdc.device
After=dev-vdc.device cryptsetup-pre.target systemd-udevd-kernel.socket
Before=cryptsetup.target blockdev@dev-mapper-secure.target umount.target
Wants=blockdev@dev-mapper-secure.target
Conflicts=umount.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/atrest-test-unlock
ExecStop=/sbin/cryptsetup close secure
`

// The harness end to end, in two boots of one machine: checks run after
// multi-user.target and report; a unit ordered before cryptsetup.target
// formats and opens a LUKS2 disk with the guest's real dm-crypt, and the
// fstab mount of /dev/mapper/secure follows it; files on the root disk,
// on a raw data disk and on the encrypted file system survive a reboot;
// the host reads disks and the root file system between boots.
func TestTwoBootsUnlockBeforeFstabMount(t *testing.T) {
	m := boot.New(t)
	raw := m.AddDisk("raw", 16)       // /dev/vdb
	secure := m.AddDisk("secure", 64) // /dev/vdc

	key := make([]byte, 64)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	m.WriteFile("/etc/atrest-test/secure.key", key, 0o400)
	// Installed the way `make install DESTDIR=staging` would lay it out.
	staging := t.TempDir()
	writeTree(t, staging, map[string]string{
		"usr/local/sbin/atrest-test-unlock":             unlockScript,
		"lib/systemd/system/atrest-test-unlock.service": unlockUnit,
	})
	m.CopyTree("/", staging)
	m.Enable("atrest-test-unlock.service", "cryptsetup.target")
	fstab, err := m.ReadFile("/etc/fstab")
	if err != nil {
		t.Fatal(err)
	}
	m.WriteFile("/etc/fstab", append(fstab, "/dev/mapper/secure /mnt/secure ext4 defaults 0 2\n"...), 0o644)

	const order = "systemctl show -p Id -p ActiveEnterTimestampMonotonic atrest-test-unlock.service cryptsetup.target mnt-secure.mount local-fs.target"
	first := m.Boot(boot.Spec{Checks: []boot.Check{
		boot.Script("reached", `systemctl is-active multi-user.target
test -z "$(systemctl --failed --no-legend)" || { systemctl --failed; exit 1; }`),
		boot.Script("mounted", `findmnt -n -o SOURCE,FSTYPE /mnt/secure
cryptsetup status secure | grep -q 'type:    LUKS2'
lsmod | grep -q '^dm_crypt '`),
		boot.Collect("order", order),
		boot.Script("write", `mkdir -p /var/lib/atrest-test
echo "written in boot 1" > /var/lib/atrest-test/note
printf 'raw-disk-marker-1' | dd of=/dev/vdb conv=fsync status=none
echo "secret payload" > /mnt/secure/file
sync`),
		boot.Journal("atrest-test-unlock.service"),
		boot.Status("atrest-test-unlock.service"),
		boot.Analyze(),
	}})
	t.Logf("boot 1: %s to power-off; systemd-analyze:\n%s", first.Duration.Round(time.Second), first.Output("analyze"))
	if first.SystemState != "running" {
		t.Errorf("boot 1 finished %q, want running", first.SystemState)
	}
	if got := first.Output("mounted"); !strings.HasPrefix(got, "/dev/mapper/secure ext4") {
		t.Errorf("/mnt/secure is mounted from %q, want /dev/mapper/secure ext4", got)
	}
	// The unlock unit was active before cryptsetup.target and the mount,
	// and the mount before local-fs.target.
	assertBefore(t, first.Output("order"), [][2]string{
		{"atrest-test-unlock.service", "cryptsetup.target"},
		{"atrest-test-unlock.service", "mnt-secure.mount"},
		{"mnt-secure.mount", "local-fs.target"},
	})
	if s := first.Output("status:atrest-test-unlock.service"); !strings.Contains(s, "Active: active (exited)") {
		t.Errorf("systemctl status of the unlock unit:\n%s", s)
	}
	if !journalSays(t, first, "atrest-test-unlock.service", "formatted /dev/vdc") {
		t.Error("boot 1's journal of the unlock unit does not say it formatted /dev/vdc")
	}

	// Between the boots, from the host.
	note, err := m.ReadFile("/var/lib/atrest-test/note")
	if err != nil || string(note) != "written in boot 1\n" {
		t.Errorf("root disk after boot 1: %q, %v", note, err)
	}
	if b, err := os.ReadFile(raw); err != nil || !bytes.HasPrefix(b, []byte("raw-disk-marker-1")) {
		t.Errorf("raw disk after boot 1 starts with %q (%v)", b[:min(len(b), 17)], err)
	}
	disk, err := os.ReadFile(secure)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(disk, []byte("LUKS\xba\xbe")) {
		t.Errorf("the secure disk has no LUKS header: % x", disk[:6])
	}
	if bytes.Contains(disk, []byte("secret payload")) {
		t.Error("the plaintext is on the secure disk: it was not encrypted")
	}

	second := m.Boot(boot.Spec{Checks: []boot.Check{
		boot.Script("read", `cat /var/lib/atrest-test/note
dd if=/dev/vdb bs=17 count=1 status=none; echo
cat /mnt/secure/file`),
		boot.Program("probe", boot.BuildProgram(t, "./testdata/probe"), "/mnt/secure/file"),
		boot.Journal("atrest-test-unlock.service"),
		boot.Analyze(),
	}})
	want := "written in boot 1\nraw-disk-marker-1\nsecret payload\n"
	if got := second.Output("read"); got != want {
		t.Errorf("boot 2 read %q, want %q", got, want)
	}
	// The guest has loopback, up, and no other network.
	if got := second.Output("probe"); got != "interface lo up=true\nloopback connect ok\n/mnt/secure/file: secret payload\n" {
		t.Errorf("the probe program saw:\n%s", got)
	}
	if journalSays(t, second, "atrest-test-unlock.service", "formatted") {
		t.Error("boot 2 formatted the secure disk again")
	}
	if !journalSays(t, second, "atrest-test-unlock.service", "opened /dev/vdc as secure") {
		t.Error("boot 2's journal of the unlock unit does not say it opened the disk")
	}
	t.Logf("boot 2: %s to power-off; systemd-analyze:\n%s", second.Duration.Round(time.Second), second.Output("analyze"))
}

// journalSays reports whether a message of unit in r's journal contains s.
func journalSays(t *testing.T, r *boot.Result, unit, s string) bool {
	t.Helper()
	entries, err := r.Journal(unit)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if msg, _ := e["MESSAGE"].(string); strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// writeTree writes files (relative path → content) below dir; files
// under sbin are executable.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for rel, content := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		perm := os.FileMode(0o644)
		if strings.Contains(rel, "sbin/") {
			perm = 0o755
		}
		if err := os.WriteFile(p, []byte(content), perm); err != nil {
			t.Fatal(err)
		}
	}
}

// A boot that hangs (a check that never ends) fails with a timeout that
// names the console log.
func TestHungBootTimesOut(t *testing.T) {
	m := boot.New(t)
	res, err := m.TryBoot(boot.Spec{
		Checks:  []boot.Check{boot.Script("hang", "sleep infinity")},
		Timeout: 30 * time.Second,
	})
	if !errors.Is(err, vm.ErrTimeout) {
		t.Fatalf("a hung boot: %v, want vm.ErrTimeout", err)
	}
	if !strings.Contains(err.Error(), res.Console) {
		t.Fatalf("the failure does not name the console log %s:\n%v", res.Console, err)
	}
}

// A mount that fails sends systemd to the emergency shell; the harness
// reports the failed unit and the guest powers off by itself.
func TestFailedMountReportsEmergency(t *testing.T) {
	m := boot.New(t)
	m.AddDisk("blank", 16) // /dev/vdb: no file system on it
	fstab, err := m.ReadFile("/etc/fstab")
	if err != nil {
		t.Fatal(err)
	}
	m.WriteFile("/etc/fstab", append(fstab, "/dev/vdb /mnt/blank ext4 defaults 0 0\n"...), 0o644)
	res, err := m.TryBoot(boot.Spec{Checks: []boot.Check{boot.Script("never", "true")}})
	if err == nil {
		t.Fatal("a boot whose fstab mount fails passed")
	}
	if errors.Is(err, vm.ErrTimeout) {
		t.Fatalf("the emergency shell was not reported; the boot timed out: %v", err)
	}
	if res.Emergency != "emergency" || !strings.Contains(res.EmergencyReport, "mnt-blank.mount") || res.Reached {
		t.Fatalf("emergency %q reached %v, report:\n%s", res.Emergency, res.Reached, res.EmergencyReport)
	}
	if !strings.Contains(err.Error(), "mnt-blank.mount") || !strings.Contains(err.Error(), res.Console) {
		t.Fatalf("the failure does not name the failed mount and the console log:\n%v", err)
	}
}
