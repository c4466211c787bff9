package boot_test

import (
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/integration/boot"
	"github.com/atrest/atrest/internal/testutil/debtest"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// installAtrest puts the Debian package that `make deb` builds
// (internal/testutil/debtest) into the guest as /root/atrest.deb and
// returns the check that installs it the way an administrator does:
// dpkg -i, then preStart (the configuration), then systemctl start,
// because the package enables atrestd.service but does not start it.
// assertInstalled checks what that check printed. The package's version
// is returned too.
func installAtrest(t testing.TB, m *boot.Machine, preStart string) (boot.Check, string) {
	t.Helper()
	deb := debtest.Build(t)
	m.CopyFile("/root/atrest.deb", deb, 0o644)
	return boot.Script("install", `dpkg -i /root/atrest.deb > /root/dpkg.log 2>&1 || { cat /root/dpkg.log; exit 1; }
echo "enabled=$(systemctl is-enabled atrestd.service)"
echo "active=$(systemctl is-active atrestd.service || true)"
`+preStart+`
systemctl start atrestd.service
echo "version=$(atrest --version)"
echo "package=$(dpkg-query -W -f '${Version}' atrest)"`), debtest.Version(t, deb)
}

// assertInstalled checks the install check's output: the unit enabled and
// not started by the installation, and atrest printing the package's
// version.
func assertInstalled(t testing.TB, r *boot.Result) {
	t.Helper()
	out := r.Output("install")
	vals := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			vals[k] = v
		}
	}
	if vals["enabled"] != "enabled" || vals["active"] != "inactive" {
		t.Errorf("after dpkg -i, atrestd.service is %q and %q, want enabled and inactive (not started):\n%s", vals["enabled"], vals["active"], out)
	}
	if vals["package"] == "" || !strings.Contains(vals["version"], vals["package"]) {
		t.Errorf("atrest --version %q does not print the package version %q", vals["version"], vals["package"])
	}
}

// The fstab line docs/systemd.md tells users to write. The device
// timeout runs from early in the boot, alongside atrestd's start, not
// from its readiness. With 20 s, a boot on a loaded machine (atrestd ready
// 21 s after systemd began to wait for /dev/mapper/data, both variants)
// skipped the mount; with 60 s, so did boot 2 of the Vault variant in a CI
// run whose emulated guest finished booting at 93 s of uptime (the
// volume was open when the checks ran, /srv/data was not mounted). Boot 2
// must mount, and the timeout only bounds a wait that ends when the volume
// opens, so it gets mountTimeout; boot 3, which waits it out on purpose
// (the KMS is unavailable), gets waitTimeout (see shortenDeviceTimeout).
const (
	mountTimeout = "x-systemd.device-timeout=240s"
	waitTimeout  = "x-systemd.device-timeout=60s"
	dataFstab    = "/dev/mapper/data /srv/data ext4 defaults,_netdev,nofail," + mountTimeout + " 0 2\n"
)

// shortenDeviceTimeout rewrites the guest's fstab for a boot whose
// volumes are not expected to open in time: mountTimeout becomes
// waitTimeout, so that the boot waits 60 s for them, not 240 s.
func shortenDeviceTimeout(t *testing.T, m *boot.Machine) {
	t.Helper()
	fstab, err := m.ReadFile("/etc/fstab")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(fstab, []byte(mountTimeout)) {
		t.Fatalf("the guest's /etc/fstab has no %s line:\n%s", mountTimeout, fstab)
	}
	m.WriteFile("/etc/fstab", bytes.ReplaceAll(fstab, []byte(mountTimeout), []byte(waitTimeout)), 0o644)
}

// kmsVariant is what differs between the KMS backends in the three-boot
// story of atrestd.
type kmsVariant struct {
	// setup prepares the machine before boot 1.
	setup func(t *testing.T, m *boot.Machine)
	// preStart runs in boot 1 after dpkg -i, before atrestd starts.
	preStart string
	// lifecycle adds the package's upgrade from the previous commit's,
	// remove, purge and reinstall to boot 2, with the volume open and
	// mounted.
	lifecycle bool
	// prepare are boot 1's checks before the data disk is formatted.
	prepare []boot.Check
	// breakKMS makes the KMS unavailable for boot 3, from the host;
	// restore is the script that brings it back in the guest.
	breakKMS func(t *testing.T, m *boot.Machine)
	restore  string
	// reason is how atrestd's status names the failure.
	reason    string
	memoryMiB int
}

// The local-keystore configuration: recovery keys printed, a short ready
// timeout and fast retries so that boot 3 stays short.
const localConfig = `kms: local
recovery:
  mode: print
daemon:
  ready_timeout: 15s
  retry_min: 1s
  retry_max: 3s
`

// Three boots of one machine with atrest installed from its Debian
// package and the local keystore; boot 2 also upgrades to it from the
// previous commit's package, removes, purges and reinstalls it; boot 3 boots without the keystore file
// (moved away), which the guest then puts back. See runAtrestdBoots.
func TestAtrestdBootsLocalKeystore(t *testing.T) {
	runAtrestdBoots(t, kmsVariant{
		setup: func(t *testing.T, m *boot.Machine) {
			m.WriteFile("/root/atrest.yaml", []byte(localConfig), 0o600)
		},
		preStart:  "install -m 0600 /root/atrest.yaml /etc/atrest/atrest.yaml",
		lifecycle: true,
		breakKMS: func(t *testing.T, m *boot.Machine) {
			kek, err := m.ReadFile("/var/lib/atrest/kek")
			if err != nil {
				t.Fatal(err)
			}
			m.Remove("/var/lib/atrest/kek")
			m.WriteFile("/root/kek.saved", kek, 0o600)
		},
		restore: "install -m 0600 /root/kek.saved /var/lib/atrest/kek",
		reason:  "kms key",
	})
}

// guestVault is the vault: section for the guest's own test Vault on its
// loopback, set up for node7 as docs/vault.md says (vaultprovision).
const guestVault = `vault:
  address: https://127.0.0.1:8200
  ca_file: /var/lib/atrest-test-vault/ca.pem
  auth:
    token_file: /etc/atrest/vault-token
  transit:
    key: atrest-node7
  kv:
    hostname: node7
  timeout: 5s
  deadline: 10s
`

// The Vault configuration: transit key and escrow.
const vaultConfig = "kms: vault-transit\n" + guestVault + `recovery:
  mode: escrow
daemon:
  ready_timeout: 30s
  retry_min: 1s
  retry_max: 3s
`

// The test Vault as a service of the guest: integration/vaultserver,
// static, keeping its storage under /var/lib/atrest-test-vault.
const vaultUnit = `[Unit]
Description=test Vault on 127.0.0.1:8200 (integration/vaultserver)
Before=atrestd.service

[Service]
ExecStart=/usr/local/lib/atrest-test/vaultserver -listen 127.0.0.1:8200 -state /var/lib/atrest-test-vault

[Install]
WantedBy=multi-user.target
`

// The same three boots with Vault transit: the guest runs the test Vault
// on its own loopback (no other network). Boot 1 starts atrestd without a
// configuration (the local default); the operator provisions Vault, writes
// the configuration and reloads atrestd (SIGHUP) before formatting, with
// the recovery key escrowed in Vault. Boot 3 boots without the Vault
// service: the KMS is unreachable; the guest then starts it.
func TestAtrestdBootsVault(t *testing.T) {
	runAtrestdBoots(t, kmsVariant{
		setup: func(t *testing.T, m *boot.Machine) {
			m.InstallProgram("/usr/local/lib/atrest-test/vaultserver", vaulttest.Binary(t))
			m.InstallUnit("atrest-test-vault.service", vaultUnit)
			m.Enable("atrest-test-vault.service", "multi-user.target")
			m.WriteFile("/root/atrest-node.hcl", []byte(vaulttest.Policies(t)["atrest-node"]), 0o600)
			m.WriteFile("/root/atrest.yaml", []byte(vaultConfig), 0o600)
		},
		prepare: []boot.Check{
			boot.Program("provision", boot.BuildProgram(t, "./testdata/vaultprovision"),
				"/var/lib/atrest-test-vault", "/root/atrest-node.hcl", "/etc/atrest/vault-token"),
			boot.Script("configure", `install -D -m 0600 /root/atrest.yaml /etc/atrest/atrest.yaml
systemctl reload atrestd.service
atrest kms check`),
		},
		breakKMS: func(t *testing.T, m *boot.Machine) {
			m.Remove("/etc/systemd/system/multi-user.target.wants/atrest-test-vault.service")
		},
		restore:   "systemctl start atrest-test-vault.service",
		reason:    "kms unavailable",
		memoryMiB: 2048,
	})
}

// runAtrestdBoots boots one machine three times with atrest installed
// from its Debian package and the data disk /dev/vdb. Boot 1: dpkg -i
// enables atrestd and does not start it; started, it runs with nothing
// to do; `atrest format` makes the data disk a volume, atrestd
// opens it by itself (the kernel's change event), a file system and a
// file go on it, and an fstab line. Boot 2: nothing manual; atrestd
// unlocks before the _netdev mount, the file is intact, status is
// healthy, the journal has the audit entries and no key, and the
// administrator's close, rekey, open keeps the file intact. Boot 3: the KMS
// is unavailable: boot completes, systemctl status says what atrestd
// waits for, and once the KMS is back the volume opens without a restart.
func runAtrestdBoots(t *testing.T, v kmsVariant) {
	m := boot.New(t)
	data := m.AddDisk("data", 64) // /dev/vdb
	install, version := installAtrest(t, m, v.preStart)
	v.setup(t, m)

	checks := append([]boot.Check{
		install,
		boot.Script("idle", `systemctl is-active atrestd.service
systemctl show -p StatusText --value atrestd.service`),
	}, v.prepare...)
	checks = append(checks,
		boot.Script("format", `atrest -o json format /dev/vdb --name data > /root/format.json
# atrestd opens the new volume by itself: the kernel's change event.
for i in $(seq 60); do [ -e /dev/mapper/data ] && break; sleep 0.5; done
test -e /dev/mapper/data || { echo "atrestd did not open the new volume"; systemctl status --no-pager atrestd.service; exit 1; }
mkfs.ext4 -q -L data /dev/mapper/data
mkdir -p /srv/data
mount /dev/mapper/data /srv/data
head -c 1048576 /dev/urandom > /srv/data/file
sha256sum /srv/data/file | cut -d' ' -f1 > /root/file.sha256
umount /srv/data
echo '`+strings.TrimSpace(dataFstab)+`' >> /etc/fstab
sync`),
		boot.Journal("atrestd.service"))
	first := m.Boot(boot.Spec{Checks: checks, MemoryMiB: v.memoryMiB, Timeout: 8 * time.Minute})
	assertInstalled(t, first)
	if got := first.Output("idle"); got != "active\nno atrest volumes found\n" {
		t.Errorf("boot 1, atrestd with no volumes: %q", got)
	}
	if !journalSays(t, first, "atrestd.service", "volume opened") {
		t.Error("boot 1: atrestd's journal does not say it opened the new volume")
	}
	var format struct {
		UUID     string `json:"uuid"`
		Recovery struct {
			Key      string `json:"key"`
			Location string `json:"location"`
		} `json:"recovery"`
	}
	out, err := m.ReadFile("/root/format.json")
	if err != nil || json.Unmarshal(out, &format) != nil || format.UUID == "" || format.Recovery.Key == "" && format.Recovery.Location == "" {
		t.Fatalf("format's JSON: %v %s", err, out)
	}
	disk, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(disk, []byte("LUKS\xba\xbe")) {
		t.Fatalf("the data disk has no LUKS header")
	}

	var lifecycle []boot.Check
	if v.lifecycle {
		lifecycle = packageLifecycle(t, m)
	}
	const order = "systemctl show -p Id -p ActiveEnterTimestampMonotonic atrestd.service remote-fs-pre.target srv-data.mount"
	checks = []boot.Check{
		boot.Script("mounted", `findmnt -n -o SOURCE,FSTYPE /srv/data
test "$(sha256sum /srv/data/file | cut -d' ' -f1)" = "$(cat /root/file.sha256)" && echo "file intact"`),
		boot.Script("status", `atrest status data`),
		boot.Collect("order", order),
		boot.Collect("state", "systemctl show -p ActiveState -p StatusText atrestd.service"),
		// Every header read takes cryptsetup's lock file in
		// /run/cryptsetup: it must be writable in atrestd's own mount
		// namespace whatever ProtectSystem= does to /run.
		boot.Script("lockdir", `pid=$(systemctl show -p MainPID --value atrestd.service)
nsenter -t "$pid" -m sh -c ': > /run/cryptsetup/atrest-probe && rm /run/cryptsetup/atrest-probe' && echo "lock directory writable"`),
		// The administrator's cycle through the CLI on the booted system:
		// close, rekey, open, and the file is still intact.
		boot.Script("cycle", `umount /srv/data
atrest close data
test ! -e /dev/mapper/data
atrest rekey data
atrest open data
mount /srv/data
test "$(sha256sum /srv/data/file | cut -d' ' -f1)" = "$(cat /root/file.sha256)" && echo "intact after close, rekey, open"`),
	}
	checks = append(checks, lifecycle...)
	checks = append(checks,
		boot.Collect("audit", "journalctl -o json --no-pager ATREST_AUDIT=true"),
		boot.Collect("security", "systemd-analyze security --no-pager atrestd.service | tail -1"),
		boot.Journal("atrestd.service"),
		boot.Analyze(),
	)
	second := m.Boot(boot.Spec{MemoryMiB: v.memoryMiB, Timeout: 8 * time.Minute, Checks: checks})
	t.Logf("boot 2: systemd-analyze security atrestd.service: %s", strings.TrimSpace(second.Output("security")))
	if got := second.Output("mounted"); got != "/dev/mapper/data ext4\nfile intact\n" {
		t.Errorf("boot 2: /srv/data: %q", got)
	}
	if s := second.Output("status"); !strings.Contains(s, "data") || !strings.Contains(s, "open") {
		t.Errorf("boot 2: atrest status:\n%s", s)
	}
	if s := second.Output("state"); !strings.Contains(s, "ActiveState=active") || !strings.Contains(s, "StatusText=1/1 volumes open") {
		t.Errorf("boot 2: atrestd's state:\n%s", s)
	}
	if got := second.Output("lockdir"); got != "lock directory writable\n" {
		t.Errorf("boot 2: /run/cryptsetup in atrestd's mount namespace: %q, want it writable", got)
	}
	if s := second.Output("cycle"); !strings.Contains(s, "intact after close, rekey, open") {
		t.Errorf("boot 2: close, rekey, open:\n%s", s)
	}
	if v.lifecycle {
		assertLifecycle(t, second.Output("lifecycle"), version)
	}
	assertBefore(t, second.Output("order"), [][2]string{
		{"atrestd.service", "remote-fs-pre.target"},
		{"atrestd.service", "srv-data.mount"},
	})
	// The audit trail: boot 1's format (the CLI), the opens (atrestd) and
	// the cycle's close and rekey, each with the volume's UUID and the
	// result, and no key.
	audit := second.Output("audit")
	if format.Recovery.Key != "" && strings.Contains(audit, format.Recovery.Key) {
		t.Error("the recovery key is in the journal")
	}
	for _, op := range []string{"format", "open", "close", "rekey"} {
		if !auditHas(t, audit, op, format.UUID) {
			t.Errorf("the journal has no successful %s audit entry for %s:\n%s", op, format.UUID, audit)
		}
	}
	t.Logf("boot 2: systemd-analyze:\n%s", second.Output("analyze"))

	// Boot 3: the KMS is unavailable at boot.
	v.breakKMS(t, m)
	shortenDeviceTimeout(t, m)
	third := m.Boot(boot.Spec{MemoryMiB: v.memoryMiB, Timeout: 8 * time.Minute, Checks: []boot.Check{
		boot.Collect("state", "systemctl show -p ActiveState -p StatusText atrestd.service"),
		boot.Status("atrestd.service"),
		boot.Script("comeback", `test ! -e /dev/mapper/data
`+v.restore+`
for i in $(seq 240); do [ -e /dev/mapper/data ] && break; sleep 0.5; done
test -e /dev/mapper/data && echo "opened after the KMS came back"
systemctl show -p StatusText atrestd.service`),
		boot.Collect("late-mount", "sleep 3; findmnt -n -o SOURCE /srv/data || echo not mounted"),
		boot.Journal("atrestd.service"),
	}})
	t.Logf("boot 3: /srv/data after the late unlock: %s", strings.TrimSpace(third.Output("late-mount")))
	if third.SystemState != "running" && third.SystemState != "degraded" {
		t.Errorf("boot 3 finished %q", third.SystemState)
	}
	want := "StatusText=degraded: 0/1 volumes open; not open: data (locked, " + v.reason + ")"
	if s := third.Output("state"); !strings.Contains(s, "ActiveState=active") || !strings.Contains(s, want) {
		t.Errorf("boot 3: atrestd's state while the KMS is unavailable, want %q:\n%s", want, s)
	}
	if s := third.Output("status:atrestd.service"); !strings.Contains(s, "degraded") || !strings.Contains(s, "error:") {
		t.Errorf("boot 3: systemctl status atrestd does not report the failure:\n%s", s)
	}
	if s := third.Output("comeback"); !strings.Contains(s, "opened after the KMS came back") || !strings.Contains(s, "StatusText=1/1 volumes open") {
		t.Errorf("boot 3: after the KMS came back:\n%s", s)
	}
}

// packageLifecycle returns boot 2's check that, with the volume open and
// mounted, downgrades to the package of the previous commit
// (debtest.BuildPrevious) and upgrades from it to this one, then removes
// and purges the package and reinstalls it with the configuration for
// boot 3; after each step the volume must still be open and the file
// intact. assertLifecycle checks its output.
func packageLifecycle(t *testing.T, m *boot.Machine) []boot.Check {
	prev, how := debtest.BuildPrevious(t)
	t.Logf("boot 2 upgrades from %s (%s)", debtest.Version(t, prev), how)
	m.CopyFile("/root/atrest-prev.deb", prev, 0o644)
	return []boot.Check{boot.Script("lifecycle", `intact() {
	test -e /dev/mapper/data && findmnt -n /srv/data > /dev/null &&
		test "$(sha256sum /srv/data/file | cut -d' ' -f1)" = "$(cat /root/file.sha256)" && echo "open and intact after $1"
}
dpkgq() { "$@" > /root/dpkg.log 2>&1 || { cat /root/dpkg.log; exit 1; }; }
dpkgq dpkg -i /root/atrest-prev.deb
echo "downgraded=$(dpkg-query -W -f '${Version}' atrest)"
intact downgrade
pid=$(systemctl show -p MainPID --value atrestd.service)
dpkgq dpkg -i /root/atrest.deb
test "$(systemctl show -p MainPID --value atrestd.service)" != "$pid" && echo "upgrade restarted atrestd"
echo "upgraded=$(atrest --version)"
echo "status=$(systemctl show -p StatusText --value atrestd.service)"
intact upgrade
dpkgq dpkg -r atrest
echo "removed=$(systemctl is-active atrestd.service || true)"
test ! -e /usr/sbin/atrest && echo "atrest removed"
intact remove
dpkg -P atrest > /root/purge.log 2>&1 || { cat /root/purge.log; exit 1; }
grep -q "kept /var/lib/atrest" /root/purge.log && echo "purge says it kept /var/lib/atrest"
test -s /var/lib/atrest/kek && echo "keystore kept"
ls /var/lib/atrest/backups/*.luks2 > /dev/null && echo "header backups kept"
test ! -e /etc/atrest/atrest.yaml && echo "configuration purged"
intact purge
dpkgq dpkg -i /root/atrest.deb
install -m 0600 /root/atrest.yaml /etc/atrest/atrest.yaml
echo "reinstalled=$(systemctl is-enabled atrestd.service)"`)}
}

// assertLifecycle checks what packageLifecycle's check printed; version
// is this tree's package version.
func assertLifecycle(t *testing.T, out, version string) {
	t.Helper()
	for _, want := range []string{
		"open and intact after downgrade",
		"upgrade restarted atrestd", "upgraded=atrest version " + version, "status=1/1 volumes open",
		"open and intact after upgrade",
		"removed=inactive", "atrest removed", "open and intact after remove",
		"purge says it kept /var/lib/atrest", "keystore kept", "header backups kept", "configuration purged",
		"open and intact after purge", "reinstalled=enabled",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("boot 2, the package's downgrade, upgrade, remove, purge and reinstall: no %q in:\n%s", want, out)
		}
	}
}

// assertBefore checks, from systemctl show output (Id and
// ActiveEnterTimestampMonotonic), that each pair's first unit became
// active no later than its second.
func assertBefore(t *testing.T, show string, pairs [][2]string) {
	t.Helper()
	at := map[string]int64{}
	var id string
	for _, l := range strings.Split(show, "\n") {
		k, v, _ := strings.Cut(l, "=")
		switch k {
		case "Id":
			id = v
		case "ActiveEnterTimestampMonotonic":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n == 0 {
				t.Errorf("%s never became active (%q)\n%s", id, v, show)
			}
			at[id] = n
		}
	}
	for _, p := range pairs {
		if at[p[0]] > at[p[1]] {
			t.Errorf("%s became active after %s:\n%s", p[0], p[1], show)
		}
	}
}

// auditHas reports whether journal JSON lines hold a successful audit
// entry for op on the volume uuid.
func auditHas(t *testing.T, lines, op, uuid string) bool {
	t.Helper()
	found := false
	dec := json.NewDecoder(strings.NewReader(lines))
	for dec.More() {
		var e map[string]any
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("audit journal: %v", err)
		}
		if e["ATREST_OP"] == op && e["ATREST_VOLUME"] == uuid && e["ATREST_RESULT"] == "ok" {
			found = true
		}
	}
	return found
}
