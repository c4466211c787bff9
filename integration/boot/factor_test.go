package boot_test

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/integration/boot"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// The configuration of the factor boots once the guest's Vault is
// provisioned, installed after data and systpm were formatted with no
// kms: line (so under the TPM, the default where there is one): Vault is
// the backend of new volumes without a policy (vaultvol), and policies
// over the TPM and Vault for the volumes the configuration names.
const factorConfig = "kms: vault-transit\nrecovery:\n  mode: print\n" + guestVault + `volumes:
  - name: anyvol
    device: /dev/vdd
    policy:
      any: [tpm, vault]
  - name: allvol
    device: /dev/vde
    policy:
      all: [tpm, vault]
  - name: vaultvol
    device: /dev/vdf
    required: false
daemon:
  ready_timeout: 10s
  retry_min: 1s
  retry_max: 3s
`

// Plain fstab lines (no _netdev) for the volumes whose keys are local,
// and the _netdev line docs/systemd.md asks for a volume that names Vault.
const (
	dataPlainFstab   = "/dev/mapper/data /srv/data ext4 defaults 0 2"
	systpmPlainFstab = "/dev/mapper/systpm /srv/systpm ext4 defaults 0 2"
	anyvolFstab      = "/dev/mapper/anyvol /srv/anyvol ext4 defaults,_netdev,nofail," + mountTimeout + " 0 2"
)

// networkUnits are masked in the boots that must not need a network.
var networkUnits = []string{
	"network.target", "network-pre.target", "network-online.target",
	"systemd-networkd.service", "systemd-networkd.socket", "systemd-networkd-wait-online.service",
	"systemd-resolved.service",
}

// pcrUnit stands for a changed boot chain: before anything unseals, it
// extends PCR 7, which every TPM object of the earlier boots is sealed to.
const pcrUnit = `[Unit]
Description=extend PCR 7 (a changed boot chain, for the test)
DefaultDependencies=no
Wants=cryptsetup-pre.target
Before=cryptsetup-pre.target atrest-early.service sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/lib/atrest-test/pcrextend 7
`

// fileScript makes a file system on /dev/mapper/NAME once atrestd has
// opened it, writes a random file and keeps its sha256 in /root/NAME.sha256.
const fileScript = `mkfile() {
	for i in $(seq 60); do [ -e /dev/mapper/$1 ] && break; sleep 0.5; done
	test -e /dev/mapper/$1 || { echo "atrestd did not open $1"; systemctl status --no-pager atrestd.service; exit 1; }
	mkfs.ext4 -q -L $1 /dev/mapper/$1
	mkdir -p /srv/$1
	mount /dev/mapper/$1 /srv/$1
	head -c 262144 /dev/urandom > /srv/$1/file
	sha256sum /srv/$1/file | cut -d' ' -f1 > /root/$1.sha256
	umount /srv/$1
}
intact() { test "$(sha256sum /srv/$1/file | cut -d' ' -f1)" = "$(cat /root/$1.sha256)" && echo "$1 intact"; }
`

// Boot ordering by factor (issue 11) and unlock policies at boot (issue
// 16), on one machine with a TPM (swtpm behind tpm-tis) and the guest's
// own test Vault on its loopback.
//
// Boot 1: atrest from its package; with a TPM and no kms: line, `atrest
// format` makes data a kms: tpm volume, with a file and a plain fstab
// line. systpm, a kms: tpm volume too, gets a TPM keyslot from `atrest
// tpm enroll`, a crypttab line with tpm2-device=auto and a plain fstab
// line. Vault is provisioned; anyvol (any: [tpm, vault]), allvol (all:
// [tpm, vault]) and vaultvol (Vault, plus a TPM keyslot) are formatted,
// anyvol with a _netdev line.
//
// Boot 2: every network unit masked and Vault not started. data is
// mounted by its plain line before local-fs.target, opened by
// atrest-early.service; systemd-cryptsetup opens systpm through the TPM
// keyslot atrest enrolled, and atrest leaves it alone; anyvol opens
// through the TPM in atrestd's first attempt, before its ready timeout,
// and is mounted; allvol waits, atrestd reports degraded, and it opens
// once Vault is started after the boot.
//
// Boot 3: PCR 7 changed by an early unit, Vault back: the TPM path is
// refused (data, systpm), anyvol and vaultvol open through Vault, and
// vaultvol's TPM keyslot is re-sealed to the new PCR 7 (Vault vouched for
// the node). Boot 4: the same changed PCR 7, Vault down: vaultvol opens
// through its re-sealed TPM keyslot; data, whose only factor is the TPM,
// is still refused.
func TestBootsByFactor(t *testing.T) {
	m := boot.New(t)
	m.AddTPM()
	m.AddDisk("data", 64)                     // /dev/vdb
	m.AddDisk("systpm", 64)                   // /dev/vdc
	m.AddDisk("anyvol", 64)                   // /dev/vdd
	m.AddDisk("allvol", 64)                   // /dev/vde
	vaultvolDisk := m.AddDisk("vaultvol", 64) // /dev/vdf
	install, _ := installAtrest(t, m, "")
	m.InstallProgram("/usr/local/lib/atrest-test/vaultserver", vaulttest.Binary(t))
	m.InstallUnit("atrest-test-vault.service", vaultUnit)
	m.Enable("atrest-test-vault.service", "multi-user.target")
	m.WriteFile("/root/atrest-node.hcl", []byte(vaulttest.Policies(t)["atrest-node"]), 0o600)
	m.WriteFile("/root/atrest.yaml", []byte(factorConfig), 0o600)

	first := m.Boot(boot.Spec{MemoryMiB: 2048, Timeout: 8 * time.Minute, Checks: []boot.Check{
		install,
		boot.Script("local", fileScript+`test -c /dev/tpmrm0
atrest format /dev/vdb --name data > /dev/null
mkfile data
echo '`+dataPlainFstab+`' >> /etc/fstab
atrest status data || true`),
		boot.Script("crypttab", fileScript+`atrest format /dev/vdc --name systpm > /dev/null
mkfile systpm
atrest tpm enroll systpm --pcrs 7
echo "systpm UUID=$(cryptsetup luksUUID /dev/vdc) none tpm2-device=auto,headless=true,timeout=20s" > /etc/crypttab
echo '`+systpmPlainFstab+`' >> /etc/fstab
atrest close systpm
systemd-cryptenroll /dev/vdc`),
		boot.Program("provision", boot.BuildProgram(t, "./testdata/vaultprovision"),
			"/var/lib/atrest-test-vault", "/root/atrest-node.hcl", "/etc/atrest/vault-token"),
		boot.Script("policies", fileScript+`install -m 0600 /root/atrest.yaml /etc/atrest/atrest.yaml
systemctl reload atrestd.service
atrest kms check
atrest format /dev/vdd --name anyvol > /dev/null
atrest format /dev/vde --name allvol > /dev/null
atrest format /dev/vdf --name vaultvol > /dev/null
mkfile anyvol
mkfile allvol
mkfile vaultvol
atrest tpm enroll vaultvol --pcrs 7
echo '`+anyvolFstab+`' >> /etc/fstab
sync`),
		boot.Journal("atrestd.service"),
	}})
	assertInstalled(t, first)
	if s := first.Output("local"); !strings.Contains(s, "tpm") {
		t.Errorf("boot 1: with a TPM and no kms: line, data is not a kms: tpm volume:\n%s", s)
	}
	if s := first.Output("crypttab"); !strings.Contains(s, "tpm2") {
		t.Errorf("boot 1: systemd-cryptenroll does not list the keyslot atrest enrolled as tpm2:\n%s", s)
	}

	// Boot 2: no network at all, and Vault down.
	m.Remove("/etc/systemd/system/multi-user.target.wants/atrest-test-vault.service")
	for _, u := range networkUnits {
		m.Symlink("/etc/systemd/system/"+u, "/dev/null")
	}
	const order = "systemctl show -p Id -p ActiveEnterTimestampMonotonic atrest-early.service srv-data.mount systemd-cryptsetup@systpm.service srv-systpm.mount local-fs.target atrestd.service"
	second := m.Boot(boot.Spec{MemoryMiB: 2048, Timeout: 8 * time.Minute, Checks: []boot.Check{
		boot.Collect("order", order),
		boot.Script("deps", `echo "early-before=$(systemctl show -p Before --value atrest-early.service)"
echo "mount-after=$(systemctl show -p After --value srv-data.mount)"
echo "mount-before=$(systemctl show -p Before --value srv-data.mount)"
echo "network=$(systemctl show -p LoadState --value network-online.target) $(systemctl is-active network-online.target || true)"`),
		boot.Script("mounted", fileScript+`for v in data systpm anyvol; do findmnt -n -o SOURCE /srv/$v; done
intact data
intact systpm
intact anyvol
systemctl show -p ActiveState -p Result systemd-cryptsetup@systpm.service`),
		boot.Collect("state", "systemctl show -p ActiveState -p StatusText atrestd.service"),
		boot.Script("vaultback", `test ! -e /dev/mapper/allvol && echo "allvol locked while Vault is down"
systemctl start atrest-test-vault.service
for i in $(seq 240); do [ -e /dev/mapper/allvol ] && break; sleep 0.5; done
test -e /dev/mapper/allvol && echo "allvol opened after Vault came back"
mkdir -p /srv/allvol
mount /dev/mapper/allvol /srv/allvol
test "$(sha256sum /srv/allvol/file | cut -d' ' -f1)" = "$(cat /root/allvol.sha256)" && echo "allvol intact"
systemctl show -p StatusText atrestd.service`),
		boot.Collect("audit", "journalctl -b -o json --no-pager ATREST_AUDIT=true ATREST_OP=open"),
		boot.Journal("atrest-early.service"),
		boot.Journal("atrestd.service"),
		boot.Journal("systemd-cryptsetup@systpm.service"),
	}})
	assertBefore(t, second.Output("order"), [][2]string{
		{"atrest-early.service", "srv-data.mount"},
		{"srv-data.mount", "local-fs.target"},
		{"systemd-cryptsetup@systpm.service", "srv-systpm.mount"},
		{"srv-systpm.mount", "local-fs.target"},
		{"local-fs.target", "atrestd.service"},
	})
	deps := second.Output("deps")
	for _, want := range []string{"early-before=", "local-fs-pre.target", "mount-after=", "mount-before=", "network=masked inactive"} {
		if !strings.Contains(deps, want) {
			t.Errorf("boot 2: no %q in the units' dependencies:\n%s", want, deps)
		}
	}
	for _, l := range strings.Split(deps, "\n") {
		k, v, _ := strings.Cut(l, "=")
		want := map[string]string{"early-before": "local-fs-pre.target", "mount-after": "local-fs-pre.target", "mount-before": "local-fs.target"}[k]
		if want != "" && !strings.Contains(" "+v+" ", " "+want+" ") {
			t.Errorf("boot 2: %s is %q, want it to hold %s", k, v, want)
		}
	}
	mounted := second.Output("mounted")
	for _, want := range []string{"/dev/mapper/data\n", "/dev/mapper/systpm\n", "/dev/mapper/anyvol\n", "data intact", "systpm intact", "anyvol intact", "ActiveState=active", "Result=success"} {
		if !strings.Contains(mounted, want) {
			t.Errorf("boot 2: no %q in:\n%s", want, mounted)
		}
	}
	if !journalSays(t, second, "atrest-early.service", "early unlock done") || !journalHas(t, second, "atrest-early.service", "volume opened", "data") {
		t.Error("boot 2: atrest-early.service's journal does not say it opened data")
	}
	for _, unit := range []string{"atrest-early.service", "atrestd.service"} {
		if journalHas(t, second, unit, "volume opened", "systpm") || !journalHas(t, second, unit, "volume left to systemd-cryptsetup", "systpm") {
			t.Errorf("boot 2: %s does not leave systpm, which /etc/crypttab names, to systemd-cryptsetup", unit)
		}
	}
	if journalHas(t, second, "atrest-early.service", "volume opened", "anyvol") || journalHas(t, second, "atrest-early.service", "volume opened", "allvol") {
		t.Error("boot 2: atrest-early.service opened a volume whose policy names Vault")
	}
	// any: [tpm, vault] opened through the TPM at once: before atrestd's
	// first failed try of allvol, which waits for Vault until the KMS
	// deadline, and before atrestd gave up waiting for allvol.
	opened := journalIndex(t, second, "atrestd.service", "open anyvol (", "anyvol")
	allFailed := journalIndex(t, second, "atrestd.service", "open allvol (", "allvol")
	timeout := journalIndex(t, second, "atrestd.service", "ready timeout passed", "")
	if opened < 0 || allFailed < 0 || timeout < 0 || opened > allFailed || opened > timeout {
		t.Errorf("boot 2: atrestd's journal has anyvol's open at entry %d, allvol's first failure at %d and the ready timeout at %d: want anyvol's open first", opened, allFailed, timeout)
	}
	if f := auditFactors(t, second.Output("audit"), "anyvol"); f != "tpm" {
		t.Errorf("boot 2: anyvol opened by factors %q, want tpm (Vault is down)", f)
	}
	if s := second.Output("state"); !strings.Contains(s, "StatusText=degraded: ") || !strings.Contains(s, "volumes open; not open: allvol (locked, kms unavailable)") {
		t.Errorf("boot 2: atrestd's state with Vault down:\n%s", s)
	}
	if second.SystemState != "running" && second.SystemState != "degraded" {
		t.Errorf("boot 2 finished %q", second.SystemState)
	}
	back := second.Output("vaultback")
	for _, want := range []string{"allvol locked while Vault is down", "allvol opened after Vault came back", "allvol intact", "StatusText=4/4 volumes open"} {
		if !strings.Contains(back, want) {
			t.Errorf("boot 2, all: [tpm, vault] once Vault is back: no %q in:\n%s", want, back)
		}
	}
	if f := auditFactors(t, second.Output("audit"), "allvol"); f != "tpm,vault" && f != "vault,tpm" {
		t.Errorf("boot 2: allvol opened by factors %q, want tpm and vault", f)
	}

	// Boot 3: a changed boot chain. An early unit extends PCR 7 before
	// anything unseals; the network is back (Vault starts at boot). The
	// TPM refuses everything sealed to the old PCR 7: atrest-early.service
	// cannot open data (kms: tpm, the TPM its only factor) and fails, and
	// systemd-cryptsetup cannot open systpm; their fstab lines are taken
	// out for this boot (without nofail they would stop the boot in
	// emergency mode, as docs/systemd.md says). anyvol and vaultvol open
	// through Vault.
	m.Enable("atrest-test-vault.service", "multi-user.target")
	for _, u := range networkUnits {
		m.Remove("/etc/systemd/system/" + u)
	}
	fstab, err := m.ReadFile("/etc/fstab")
	if err != nil {
		t.Fatal(err)
	}
	m.WriteFile("/etc/fstab", []byte(strings.NewReplacer(dataPlainFstab+"\n", "", systpmPlainFstab+"\n", "").Replace(string(fstab))), 0o644)
	m.InstallProgram("/usr/local/lib/atrest-test/pcrextend", boot.BuildProgram(t, "./testdata/pcrextend"))
	m.InstallUnit("atrest-test-pcr.service", pcrUnit)
	m.Enable("atrest-test-pcr.service", "sysinit.target")
	third := m.Boot(boot.Spec{MemoryMiB: 2048, Timeout: 8 * time.Minute, Checks: []boot.Check{
		boot.Collect("early", "systemctl show -p Result atrest-early.service; systemctl show -p Result systemd-cryptsetup@systpm.service; test ! -e /dev/mapper/data && echo data locked; test ! -e /dev/mapper/systpm && echo systpm locked"),
		boot.Script("vault", `for v in anyvol vaultvol; do
	for i in $(seq 120); do [ -e /dev/mapper/$v ] && break; sleep 0.5; done
	test -e /dev/mapper/$v && echo "$v open"
done
# atrestd re-seals after the mapping exists: wait for its audit entry.
for i in $(seq 120); do
	journalctl -b -q -o cat --no-pager ATREST_OP=tpm-reseal ATREST_NAME=vaultvol | grep -q . && break
	sleep 0.5
done
systemctl show -p StatusText atrestd.service`),
		boot.Collect("audit", "journalctl -b -o json --no-pager ATREST_AUDIT=true ATREST_OP=open"),
		boot.Collect("reseal", "journalctl -b -o json --no-pager ATREST_AUDIT=true ATREST_OP=tpm-reseal"),
		boot.Collect("atrestd", "journalctl -b -o cat --no-pager -u atrestd.service"),
		boot.Journal("atrest-early.service"),
		boot.Journal("atrest-test-pcr.service"),
	}})
	if !journalSays(t, third, "atrest-test-pcr.service", "extended PCR 7") {
		t.Fatal("boot 3: the early unit did not extend PCR 7")
	}
	early := third.Output("early")
	for _, want := range []string{"Result=exit-code\n", "data locked", "systpm locked"} {
		if !strings.Contains(early, want) {
			t.Errorf("boot 3, PCR 7 changed: no %q in:\n%s", want, early)
		}
	}
	if !strings.Contains(early, "Result=exit-code\nResult=exit-code") {
		t.Errorf("boot 3, PCR 7 changed: atrest-early.service and systemd-cryptsetup@systpm.service did not both fail:\n%s", early)
	}
	if !journalSays(t, third, "atrest-early.service", "data (locked: ") {
		t.Error("boot 3: atrest-early.service's journal does not name data as not opened")
	}
	if s := third.Output("vault"); !strings.Contains(s, "anyvol open") || !strings.Contains(s, "vaultvol open") || !strings.Contains(s, "data (locked, tpm)") {
		t.Errorf("boot 3: through Vault, with the TPM refusing:\n%s", s)
	}
	if f := auditFactors(t, third.Output("audit"), "anyvol"); f != "vault" {
		t.Errorf("boot 3: anyvol opened by factors %q, want vault (the TPM refuses the changed PCR 7)", f)
	}
	// The re-seal: vaultvol opened through Vault, which vouches for the
	// node, so its TPM keyslot is sealed again to today's PCR 7; data,
	// whose only factor is the TPM, is not.
	if !auditHas(t, third.Output("reseal"), "tpm-reseal", vaultvolUUID(t, third)) {
		dump, _ := exec.Command("cryptsetup", "luksDump", vaultvolDisk).CombinedOutput()
		t.Errorf("boot 3: no successful tpm-reseal audit entry for vaultvol:\n%s\natrestd's journal:\n%s\nvaultvol's header after boot 3:\n%s",
			third.Output("reseal"), third.Output("atrestd"), dump)
	}

	// Boot 4: the changed boot chain stays (PCR 7 extended again), Vault
	// is down: vaultvol opens through its re-sealed TPM keyslot; data is
	// still refused (never re-sealed with the TPM as its only factor).
	m.Remove("/etc/systemd/system/multi-user.target.wants/atrest-test-vault.service")
	fourth := m.Boot(boot.Spec{MemoryMiB: 2048, Timeout: 8 * time.Minute, Checks: []boot.Check{
		boot.Script("tpm", fileScript+`for i in $(seq 120); do [ -e /dev/mapper/vaultvol ] && break; sleep 0.5; done
mkdir -p /srv/vaultvol
mount /dev/mapper/vaultvol /srv/vaultvol
intact vaultvol
test ! -e /dev/mapper/data && echo "data locked"
systemctl is-active atrest-test-vault.service || true`),
		boot.Collect("audit", "journalctl -b -o json --no-pager ATREST_AUDIT=true ATREST_OP=open"),
		boot.Journal("atrest-test-pcr.service"),
	}})
	if !journalSays(t, fourth, "atrest-test-pcr.service", "extended PCR 7") {
		t.Fatal("boot 4: the early unit did not extend PCR 7")
	}
	if s := fourth.Output("tpm"); !strings.Contains(s, "vaultvol intact") || !strings.Contains(s, "data locked") || !strings.Contains(s, "inactive") {
		t.Errorf("boot 4, Vault down, PCR 7 as in boot 3:\n%s", s)
	}
	if f := auditFactors(t, fourth.Output("audit"), "vaultvol"); f != "tpm-keyslot" {
		t.Errorf("boot 4: vaultvol opened by factors %q, want tpm-keyslot (its re-sealed TPM keyslot, Vault down)", f)
	}
}

// journalIndex is the position in unit's journal of the first entry whose
// message contains msg and whose ATREST_NAME is name ("" for any), or -1.
func journalIndex(t *testing.T, r *boot.Result, unit, msg, name string) int {
	t.Helper()
	entries, err := r.Journal(unit)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range entries {
		m, _ := e["MESSAGE"].(string)
		n, _ := e["ATREST_NAME"].(string)
		if strings.Contains(m, msg) && (name == "" || n == name) {
			return i
		}
	}
	return -1
}

// journalHas reports whether unit's journal has an entry with msg about
// the volume name.
func journalHas(t *testing.T, r *boot.Result, unit, msg, name string) bool {
	t.Helper()
	return journalIndex(t, r, unit, msg, name) >= 0
}

// auditFactors returns the factors of the last successful open audit
// entry of the volume name in journal JSON lines ("" when none).
func auditFactors(t *testing.T, lines, name string) string {
	t.Helper()
	var got string
	for _, e := range decodeJournal(t, lines) {
		if e["ATREST_OP"] == "open" && e["ATREST_NAME"] == name && e["ATREST_RESULT"] == "ok" {
			got, _ = e["ATREST_FACTORS"].(string)
		}
	}
	return got
}

// decodeJournal decodes `journalctl -o json` lines.
func decodeJournal(t *testing.T, lines string) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := json.NewDecoder(strings.NewReader(lines))
	for dec.More() {
		var e map[string]any
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("journal: %v", err)
		}
		out = append(out, e)
	}
	return out
}

// vaultvolUUID is vaultvol's UUID, from the open audit entries of r.
func vaultvolUUID(t *testing.T, r *boot.Result) string {
	t.Helper()
	for _, e := range decodeJournal(t, r.Output("audit")) {
		if e["ATREST_NAME"] == "vaultvol" {
			if u, ok := e["ATREST_VOLUME"].(string); ok {
				return u
			}
		}
	}
	t.Fatal("no audit entry names vaultvol")
	return ""
}
