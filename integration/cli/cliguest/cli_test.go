package cliguest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/integration/vm/guest"
)

const atrest = guest.AtrestBinary

// node is an atrest setup with the local keystore, printing the recovery key.
type node struct {
	*guest.Atrest
	t *testing.T
}

func newNode(t *testing.T) *node {
	t.Helper()
	return &node{guest.NewAtrest(t, "print"), t}
}

type result struct {
	code           int
	stdout, stderr string
}

func (n *node) run(stdin io.Reader, args ...string) result {
	n.t.Helper()
	cmd := exec.Command(atrest, n.Args(args...)...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		n.t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

func (n *node) want(code int, args ...string) result {
	n.t.Helper()
	r := n.run(nil, args...)
	if r.code != code {
		n.t.Fatalf("atrest %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	return r
}

// format makes a volume and returns its printed recovery key.
func (n *node) format(dev, name string) string {
	n.t.Helper()
	var f struct {
		Recovery struct {
			Key string `json:"key"`
		} `json:"recovery"`
	}
	if err := json.Unmarshal([]byte(n.want(0, "-o", "json", "format", dev, "--name", name).stdout), &f); err != nil || len(f.Recovery.Key) != 71 {
		n.t.Fatalf("format JSON: %v %+v", err, f)
	}
	return f.Recovery.Key
}

func mapped(t *testing.T, name string) bool {
	t.Helper()
	return strings.Contains(guest.Run(t, "dmsetup", "ls"), name)
}

// The administrator's cycle through the kernel: format, open, a file
// system and a file, close, rekey, open --all, the file is intact; open of
// an open volume succeeds; close of a mounted one is refused and it keeps
// working; close of a closed one succeeds.
func TestFormatOpenWriteCloseRekeyOpenRead(t *testing.T) {
	n := newNode(t)
	dev := guest.Disk(t, 96).Path
	n.format(dev, "cyc")

	if r := n.want(0, "open", "cyc"); !strings.Contains(r.stdout, "cyc: opened at /dev/mapper/cyc") {
		t.Fatalf("open: %s", r.stdout)
	}
	t.Cleanup(func() { _ = exec.Command(atrest, n.Args("close", "cyc")...).Run() })
	table := guest.Run(t, "dmsetup", "table", "--showkeys", "cyc")
	if !strings.Contains(table, "logon:atrest:CRYPT-LUKS2-") || !strings.Contains(table, "sector_size:4096") {
		t.Fatalf("the mapping's table: %s", table)
	}
	guest.Mkfs(t, "/dev/mapper/cyc")
	dir := guest.Mount(t, "/dev/mapper/cyc")
	content := bytes.Repeat([]byte("atrest through dm-crypt\n"), 40000)
	if err := os.WriteFile(filepath.Join(dir, "file"), content, 0o600); err != nil {
		t.Fatal(err)
	}

	if r := n.want(0, "open", "cyc"); !strings.Contains(r.stdout, "already open") {
		t.Fatalf("open of an open volume: %s", r.stdout)
	}
	r := n.want(13, "close", "cyc")
	if !strings.Contains(r.stderr, "mounted on "+dir) || !strings.Contains(r.stderr, "hint: unmount") {
		t.Fatalf("close of a mounted volume: %s", r.stderr)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "file")); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("the file system broke after the refused close: %v", err)
	}
	guest.Unmount(t, dir)
	n.want(0, "close", "cyc")
	if mapped(t, "cyc") {
		t.Fatal("close left the mapping")
	}
	if r := n.want(0, "close", "cyc"); !strings.Contains(r.stdout, "not open") {
		t.Fatalf("close of a closed volume: %s", r.stdout)
	}

	n.want(0, "rekey", "cyc")
	n.want(0, "open", "--all")
	dir = guest.Mount(t, "/dev/mapper/cyc")
	if got, err := os.ReadFile(filepath.Join(dir, "file")); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("the file after close, rekey and open: %v", err)
	}
	var st struct {
		Volumes []struct {
			State  string `json:"state"`
			Mapper string `json:"mapper"`
		} `json:"volumes"`
	}
	if err := json.Unmarshal([]byte(n.want(0, "-o", "json", "status", "cyc").stdout), &st); err != nil || st.Volumes[0].State != "open" || st.Volumes[0].Mapper != "/dev/mapper/cyc" {
		t.Fatalf("status of the open volume: %v %+v", err, st)
	}
	guest.Unmount(t, dir)
	n.want(0, "close", "--all")
}

// The KEK is lost (the keystore file replaced): open fails with the KMS
// key code and leaves no mapping; the recovery key, from standard input,
// unlocks; reseal puts the volume under the new KEK and open works again.
func TestKEKLostRecoveryUnlockAndReseal(t *testing.T) {
	n := newNode(t)
	dev := guest.Disk(t, 48).Path
	rk := n.format(dev, "lost")
	if err := os.Remove(filepath.Join(n.Dir, "kek")); err != nil {
		t.Fatal(err)
	}
	r := n.want(11, "open", "lost")
	if !strings.Contains(r.stderr, "reseal") || mapped(t, "lost") {
		t.Fatalf("open with the KEK lost: %s (mapping left: %v)", r.stderr, mapped(t, "lost"))
	}

	if r := n.run(strings.NewReader("wrong-key\n"), "recovery", "unlock", "lost"); r.code != 8 || mapped(t, "lost") {
		t.Fatalf("recovery unlock with a wrong key: exit %d %s", r.code, r.stderr)
	}
	if r := n.run(strings.NewReader(strings.ToUpper(rk)+"\n"), "recovery", "unlock", "lost"); r.code != 0 || !mapped(t, "lost") {
		t.Fatalf("recovery unlock with the recovery key (upper case, from stdin): exit %d %s", r.code, r.stderr)
	}
	n.want(0, "close", "lost")

	if r := n.run(strings.NewReader(rk+"\n"), "recovery", "reseal", "lost"); r.code != 0 {
		t.Fatalf("reseal: exit %d %s", r.code, r.stderr)
	}
	n.want(0, "open", "lost")
	n.want(0, "status", "lost")
	n.want(0, "close", "lost")
}
