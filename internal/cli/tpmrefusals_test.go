package cli

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/atrest/atrest/internal/testutil/swtpmtest"
	"github.com/atrest/atrest/pkg/luks2/luks2test"
)

// Each way the TPM path can fail through the command line has its own
// message and exit code, and leaves the volumes byte for byte as they
// were: a wrong PIN, a hand-edited token, another machine's TPM, no TPM,
// the PCRs changed, lockout, and the TPM stopping in the middle of the
// open. (The KMS is broken throughout: the TPM path is the one left.)
func TestTPMKeyslotRefusalsChangeNothing(t *testing.T) {
	sw := swtpmtest.Start(t)
	n := newTPMKeyslotNode(t, sw)
	evol := n.volume("evol")
	n.expect(ExitOK, "tpm", "enroll", evol, "--pcrs", "7")
	// lvol's PIN keyslot binds to no PCR, so it still reaches the PIN
	// check (and the lockout) after PCR 7 changed.
	lvol := n.volume("lvol")
	n.expect(ExitOK, "tpm", "enroll", lvol, "--pcrs", "", "--pin-file", n.pinFile)
	rewriteImage(t, evol, func(doc map[string]any) {
		for _, tok := range luks2test.Obj(doc, "tokens") {
			if m, ok := tok.(map[string]any); ok && m["type"] == "systemd-tpm2" {
				m["tpm2-blob"] = "not base64!"
			}
		}
	})
	n.breakKMS()
	vols := []string{n.vol, n.pvol, evol, lvol}
	sums := map[string][32]byte{}
	for _, v := range vols {
		sums[v] = sum(t, v)
	}
	refused := func(code int, want string, args ...string) {
		t.Helper()
		r := n.expect(code, args...)
		if !strings.Contains(r.stderr, want) {
			t.Fatalf("atrest %v: the message does not say %q: %s", args, want, r)
		}
		for _, v := range vols {
			if sum(t, v) != sums[v] {
				t.Fatalf("atrest %v changed %s", args, v)
			}
		}
	}

	wrong := n.file("wrong", "2468\n")
	refused(ExitKeyRejected, "rejected the PIN", "open", "--test", n.pvol, "--pin-file", wrong)
	refused(ExitTPMToken, "malformed systemd-tpm2 token", "open", "--test", evol)
	refused(ExitTPMToken, "malformed systemd-tpm2 token", "tpm", "reseal", evol)

	other := swtpmtest.Start(t)
	n.useTPM(other)
	refused(ExitOtherTPM, "not this machine's TPM", "open", "--test", n.vol)
	other.Stop()
	refused(ExitNoTPM, "no TPM 2.0 found", "open", "--test", n.vol)

	n.useTPM(sw)
	sw.ExtendPCR7(t)
	refused(ExitPCRMismatch, "PCR", "open", "--test", n.vol)
	locked := false
	for range 5 {
		if r := n.run("", "open", "--test", lvol, "--pin-file", wrong); r.code == ExitTPMLockout {
			locked = true
			break
		}
	}
	if !locked {
		t.Fatal("repeated wrong PINs never put the TPM into lockout")
	}
	refused(ExitTPMLockout, "dictionary-attack lockout", "open", "--test", lvol, "--pin-file", n.pinFile)

	// The PIN is read from a FIFO once the TPM connection is open; the
	// TPM is stopped before the PIN arrives.
	fifo := filepath.Join(n.dir, "pin.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		sw.Stop()
		_, _ = f.WriteString("1357\n")
		f.Close()
	}()
	refused(ExitNoTPM, "the TPM stopped answering", "open", "--test", lvol, "--pin-file", fifo)
}
