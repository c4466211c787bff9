package cli

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
)

// Bad input gets its own message and exit code, and the device is left
// byte for byte as it was.
func TestRefusalsLeaveDevicesUnchanged(t *testing.T) {
	n := localNode(t, "none")

	t.Run("missing device", func(t *testing.T) {
		n.t = t
		n.expect(5, []string{"/dev/nonexistent-disk"}, "format", "/dev/nonexistent-disk", "--name", "x")
	})
	t.Run("ext4 on it", func(t *testing.T) {
		n.t = t
		dev := disk(t, 64)
		sh(t, "mkfs.ext4", "-q", dev)
		before := testutil.SHA256(t, dev)
		n.expect(4, []string{"already holds ext4", "hint: if the data may be destroyed, run again with --force"}, "format", dev, "--name", "x")
		if testutil.SHA256(t, dev) != before {
			t.Fatal("a refused format changed the device")
		}
		// With --force the same device is formatted, and says what it wiped.
		r := n.ok("format", dev, "--name", "forced", "--force")
		if !strings.Contains(r.stdout, "wiped: ext4") {
			t.Fatalf("format --force does not report what it wiped: %s", r)
		}
	})
	t.Run("mounted", func(t *testing.T) {
		n.t = t
		dev := disk(t, 64)
		sh(t, "mkfs.ext4", "-q", dev)
		mnt := t.TempDir()
		// Read-only: a read-write ext4 keeps writing by itself (lazy inode
		// table init, journal), which would hide what atrest did or not.
		sh(t, "mount", "-o", "ro", dev, mnt)
		t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
		before := testutil.SHA256(t, dev)
		// --force never overrides a device in use.
		n.expect(4, []string{"mounted on " + mnt}, "format", dev, "--name", "x", "--force")
		if testutil.SHA256(t, dev) != before {
			t.Fatal("a refused format changed a mounted device")
		}
	})
	t.Run("LUKS1", func(t *testing.T) {
		n.t = t
		dev := disk(t, 64)
		sh(t, "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks1", "--pbkdf-force-iterations", "1000", "--key-file", keyFile(t, "pass"), dev)
		before := testutil.SHA256(t, dev)
		for _, args := range [][]string{{"rekey", dev}, {"adopt", dev, "--name", "x", "--key-file", keyFile(t, "pass")}} {
			n.expect(6, []string{"LUKS1", "hint: convert it first: cryptsetup convert --type luks2"}, args...)
		}
		if testutil.SHA256(t, dev) != before {
			t.Fatal("a refused command changed a LUKS1 device")
		}
	})
	t.Run("not LUKS at all", func(t *testing.T) {
		n.t = t
		dev := disk(t, 32)
		n.expect(6, []string{"no LUKS header"}, "rekey", dev)
	})
	t.Run("wrong recovery key", func(t *testing.T) {
		n.t = t
		m := localNode(t, "print")
		dev := disk(t, 64)
		m.ok("format", dev, "--name", "rk1")
		before := testutil.SHA256(t, dev)
		r := m.run(strings.NewReader("cbcbcbcb-cbcbcbcb-cbcbcbcb-cbcbcbcb-cbcbcbcb-cbcbcbcb-cbcbcbcb-cbcbcbcb\n"), "recovery", "reseal", "rk1")
		if r.code != 8 || !strings.Contains(r.stderr, "no keyslot accepts this passphrase") {
			t.Fatalf("reseal with a wrong recovery key: %s", r)
		}
		if testutil.SHA256(t, dev) != before {
			t.Fatal("a refused reseal changed the device")
		}
	})
	t.Run("usage", func(t *testing.T) {
		n.t = t
		n.expect(2, []string{"--name"}, "format", "/dev/null")
		n.expect(2, []string{"unknown output format"}, "-o", "yaml", "status")
		n.expect(2, []string{"no volume given"}, "rekey")
		n.expect(2, []string{"flag provided but not defined"}, "status", "--bogus")
	})
}

// A configuration that is insecure or wrong is refused before anything
// happens, naming the line and field.
func TestConfigRefusals(t *testing.T) {
	n := localNode(t, "none")
	if err := os.Chmod(n.config, 0o666); err != nil {
		t.Fatal(err)
	}
	n.expect(12, []string{"writable by group or others", "chmod go-w"}, "status")
	n.writeConfig("kms: local\nrecovery:\n  mode: emial\n")
	if err := os.Chmod(n.config, 0o600); err != nil {
		t.Fatal(err)
	}
	n.expect(12, []string{n.config + ":3: recovery.mode: unknown mode \"emial\""}, "status")
	n.writeConfig("kms: local\nlocal:\n  keystor: /x\n")
	n.expect(12, []string{n.config + ":3: field keystor not found"}, "status")
}

// Status needs attention (exit 3) when the header backup is gone, and says
// how to fix it.
func TestStatusNeedsAttention(t *testing.T) {
	n := localNode(t, "none")
	dev := disk(t, 64)
	f := jsonOf[formatJSON](t, n.ok("-o", "json", "format", dev, "--name", "att1"))
	if err := os.Remove(f.Backup); err != nil {
		t.Fatal(err)
	}
	r := n.expect(3, nil, "status", "att1")
	if !strings.Contains(r.stdout, "att1: no header backup; run: atrest header backup att1") {
		t.Fatalf("status does not name the problem and its fix:\n%s", r)
	}
	n.ok("header", "backup", "att1")
	n.ok("status", "att1")
}
