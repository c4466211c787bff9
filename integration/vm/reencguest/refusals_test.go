package reencguest

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/atrest/atrest/integration/vm/guest"
	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/tpm2"
)

// try runs atrest and returns its exit code and what it printed.
func (n *node) try(args ...string) (int, string) {
	n.t.Helper()
	var out bytes.Buffer
	c := n.cmd(args...)
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String()
	}
	n.t.Fatalf("atrest %v: %v", args, err)
	return 0, ""
}

// unchanged is what a refusal must leave as it was: the header (as
// cryptsetup dumps it) and the mapping's table.
type unchanged struct{ header, table string }

func stateOf(t *testing.T, dev, name string) unchanged {
	t.Helper()
	lines, err := dmcrypt.TableLines(name)
	if err != nil {
		t.Fatal(err)
	}
	return unchanged{guest.Run(t, "cryptsetup", "luksDump", "--dump-json-metadata", dev), strings.Join(lines, "\n")}
}

// refused runs atrest reencrypt name on the open volume on dev and
// checks it exits code with a message containing want, the header and
// the mapping untouched.
func (n *node) refused(t *testing.T, dev, name string, code int, want string) {
	t.Helper()
	n.refusedAs(t, name, dev, name, code, want)
}

// refusedAs is refused with the volume named by arg (a name or device).
func (n *node) refusedAs(t *testing.T, arg, dev, name string, code int, want string) {
	t.Helper()
	before := stateOf(t, dev, name)
	got, out := n.try("reencrypt", arg)
	if got != code || !strings.Contains(out, want) {
		t.Fatalf("atrest reencrypt %s: exit %d, want %d with %q:\n%s", name, got, code, want, out)
	}
	if after := stateOf(t, dev, name); after != before {
		t.Fatalf("the refused online reencrypt changed the header or the mapping:\n%+v\n%+v", before, after)
	}
	for _, h := range []string{name + "-overlay", name + "-hotzone-forward"} {
		if _, err := dmcrypt.Inspect(h); err == nil {
			t.Fatalf("the refused run left %s", h)
		}
	}
	t.Logf("refused (exit %d): %s", got, strings.TrimSpace(out))
}

// An open volume that an online run cannot take over is refused before
// anything is written, each case with its own message: a read-only
// mapping, a mapping of part of the data area, another volume's mapping
// under the volume's name, a re-encryption cryptsetup started with a
// resilience atrest does not resume.
func TestOnlineReencryptRefusals(t *testing.T) {
	n := newNode(t)
	dev := guest.Disk(t, 24).Path
	n.want("format", dev, "--name", "orf")
	kf := n.platformSecretFile(t, dev)
	openWith := func(name string, extra ...string) {
		guest.Run(t, "cryptsetup", append(append([]string{"open", "--key-file", kf}, extra...), dev, name)...)
	}
	closeIt := func(name string) { guest.Run(t, "cryptsetup", "close", name) }

	openWith("orf", "--readonly")
	n.refused(t, dev, "orf", 4, "read-only")
	closeIt("orf")

	openWith("orf", "--disable-keyring")
	halve(t, "orf")
	n.refused(t, dev, "orf", 4, "not a crypt mapping of the whole data area")
	closeIt("orf")

	other := guest.Disk(t, 24).Path
	n.want("format", other, "--name", "orf2")
	guest.Run(t, "cryptsetup", "open", "--key-file", n.platformSecretFile(t, other), other, "orf")
	// By name, orf is the volume /dev/mapper/orf maps (orf2, whose device
	// is then in use); by device, the volume orf, whose name another
	// volume's mapping holds.
	n.refusedAs(t, dev, dev, "orf", 4, "is another device")
	closeIt("orf")

	openWith("orf")
	guest.Run(t, "cryptsetup", append([]string{"reencrypt", "--init-only", "--batch-mode", "--resilience", "journal", "--key-file", kf, "--active-name", "orf"}, guest.CheapKDF...)...)
	n.refused(t, dev, "orf", 21, "cryptsetup reencrypt --resume-only")
	closeIt("orf")
}

// tpmTokens is the header's systemd-tpm2 tokens: keyslot by token id,
// and whether each needs a PIN.
func tpmTokens(t *testing.T, dev string) (slots map[string]int, pin map[string]bool) {
	t.Helper()
	var meta struct {
		Tokens map[string]struct {
			Type     string   `json:"type"`
			Keyslots []string `json:"keyslots"`
			PIN      bool     `json:"tpm2-pin"`
		} `json:"tokens"`
	}
	if err := json.Unmarshal([]byte(guest.Run(t, "cryptsetup", "luksDump", "--dump-json-metadata", dev)), &meta); err != nil {
		t.Fatal(err)
	}
	slots, pin = map[string]int{}, map[string]bool{}
	for id, tok := range meta.Tokens {
		if tok.Type != "systemd-tpm2" {
			continue
		}
		if len(tok.Keyslots) != 1 {
			t.Fatalf("systemd-tpm2 token %s is bound to %v", id, tok.Keyslots)
		}
		ks, _ := strconv.Atoi(tok.Keyslots[0])
		slots[id], pin[id] = ks, tok.PIN
	}
	return slots, pin
}

// Online, with the guest's TPM: a volume with a PIN TPM keyslot is
// refused before anything is written when no PIN is given; with
// --pin-file the PIN keyslot is re-sealed under the new volume key while
// the volume stays open, and opens it (open --test with the PIN, the
// local keystore gone). A TPM keyslot without PIN is re-sealed the same
// way, and cryptsetup, with systemd's token plugin and the TPM alone,
// opens the result.
func TestOnlineReencryptTPM(t *testing.T) {
	// On the host (no device-mapper) this skips as every guest test
	// does; inside the guest the TPM must be there.
	testutil.RequireDeviceMapper(t)
	if _, err := os.Stat(tpm2.DefaultDevice); err != nil {
		testutil.Missing(t, "no kernel TPM ("+tpm2.DefaultDevice+"): the guest of TestRealKernelReencrypt has one")
	}
	n := newNode(t)
	dev := guest.Disk(t, 24).Path
	n.want("format", dev, "--name", "otp")
	n.want("open", "otp")
	t.Cleanup(func() { _ = n.cmd("close", "otp").Run() })
	fill(t, "/dev/mapper/otp", 2048)

	pinFile := guest.KeyFile(t, []byte("4711"))
	n.want("tpm", "enroll", "otp", "--pcrs", "7", "--pin-file", pinFile)
	n.refused(t, dev, "otp", 2, "needs a PIN")
	slots := n.reencryptTPM(t, dev, "otp", true, "--pin-file", pinFile)
	n.without(t, func() {
		if out := n.want("open", "--test", "otp", "--pin-file", pinFile); !strings.Contains(out, "otp: unlocks (by tpm-keyslot)") {
			t.Fatalf("open --test through the re-sealed PIN TPM keyslot: %s", out)
		}
	})
	for _, ks := range slots {
		n.want("tpm", "remove", "otp", "--keyslot", strconv.Itoa(ks))
	}

	n.want("tpm", "enroll", "otp", "--pcrs", "7")
	n.reencryptTPM(t, dev, "otp", false)
	guest.Run(t, "cryptsetup", "open", "--test-passphrase", "--token-only", "--token-type", "systemd-tpm2", dev)
	n.want("close", "otp")
	guest.Run(t, "cryptsetup", "open", "--token-only", "--token-type", "systemd-tpm2", dev, "otp")
	all, err := directRead("/dev/mapper/otp", 0, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for b := 0; b < 2048; b++ {
		if !bytes.Equal(all[b*blk:(b+1)*blk], pattern(b, 0)) {
			t.Fatalf("block %d, opened through the re-sealed TPM token, differs from what was written", b)
		}
	}
}

// reencryptTPM re-encrypts the open volume name on dev online (with
// extra flags) and checks its one systemd-tpm2 token was re-sealed: bound
// to a new keyslot, needing a PIN as pin says, under a new key digest. It
// returns the token's keyslots after the run.
func (n *node) reencryptTPM(t *testing.T, dev, name string, pin bool, extra ...string) map[string]int {
	t.Helper()
	before, _ := tpmTokens(t, dev)
	digests, _ := luksDigests(t, dev)
	r := parseReport(t, n.want(append([]string{"-o", "json", "reencrypt", name, "--hotzone-size", "1M"}, extra...)...))
	if v := r.Volumes[0]; v.Resumed || v.Bytes == 0 {
		t.Fatalf("report: %+v", v)
	}
	after, pins := tpmTokens(t, dev)
	if len(before) != 1 || len(after) != 1 {
		t.Fatalf("systemd-tpm2 tokens before %v, after %v: want one each", before, after)
	}
	for id, ks := range after {
		for _, old := range before {
			if ks == old || pins[id] != pin {
				t.Fatalf("the TPM token is bound to keyslot %d (before: %d), PIN %v (want %v): not re-sealed to a new keyslot", ks, old, pins[id], pin)
			}
		}
	}
	if d, _ := luksDigests(t, dev); d == digests {
		t.Fatal("the header's key digest did not change")
	}
	return after
}

// halve reloads the crypt mapping name (its key in the table: opened
// with --disable-keyring) with half its length, as a mapping of part of
// a data area. The table, key included, goes through dmsetup's standard
// input, never argv.
func halve(t *testing.T, name string) {
	t.Helper()
	table, err := exec.Command("dmsetup", "table", "--showkeys", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	defer clear(table)
	f := bytes.Fields(table)
	n, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil || string(f[2]) != "crypt" {
		t.Fatalf("the table of %s is not one crypt target", name)
	}
	f[1] = []byte(strconv.FormatUint(n/2, 10))
	load := exec.Command("dmsetup", "load", name)
	load.Stdin = bytes.NewReader(bytes.Join(f, []byte(" ")))
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("dmsetup load %s: %v\n%s", name, err, out)
	}
	guest.Run(t, "dmsetup", "resume", "--noudevsync", name)
}
