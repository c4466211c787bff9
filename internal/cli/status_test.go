package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
)

// A volume without a name (a cryptsetup volume atrest does not manage) is
// named by its device in every problem's fix, never by an empty string,
// and the fix works.
func TestStatusNamesAnUnnamedVolumeByDevice(t *testing.T) {
	n := newNode(t)
	img := n.cryptsetupImage("plain.img", "passphrase")
	r := n.expect(ExitAttention, "status", img)
	if !strings.Contains(r.stdout, "run: atrest header backup "+img+"\n") {
		t.Fatalf("the backup problem does not name the volume: %s", r)
	}
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(line, ":") || strings.HasSuffix(line, " ") {
			t.Fatalf("a line names no volume: %q\n%s", line, r)
		}
	}
	n.expect(ExitOK, "header", "backup", img)
	if r := n.expect(ExitAttention, "status", img); strings.Contains(r.stdout, "header backup") {
		t.Fatalf("the fix did not fix it: %s", r)
	}
}

// close's JSON names each volume by name and UUID, as docs/cli.md says,
// whatever the outcome (this kernel may have no device-mapper: exit 14).
func TestCloseJSONHasUUID(t *testing.T) {
	n := newNode(t)
	img := n.volume("data1")
	n.addVolume("data1", img)
	var st struct {
		Volumes []struct {
			UUID string `json:"uuid"`
		} `json:"volumes"`
	}
	if err := json.Unmarshal([]byte(n.expect(ExitOK, "-o", "json", "status", "data1").stdout), &st); err != nil || len(st.Volumes) != 1 {
		t.Fatalf("status: %v", err)
	}
	r := n.run("", "-o", "json", "close", "data1")
	var doc struct {
		Volumes []struct {
			Name, UUID string
		} `json:"volumes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatalf("close JSON: %v\n%s", err, r)
	}
	if len(doc.Volumes) != 1 || doc.Volumes[0].Name != "data1" || doc.Volumes[0].UUID != st.Volumes[0].UUID {
		t.Fatalf("close JSON lacks the volume's UUID %s: %s", st.Volumes[0].UUID, r)
	}
}

// kms check is a diagnosis: on a node whose local keystore does not exist
// yet it says so (exit 11) and does not create one.
func TestKMSCheckDoesNotCreateTheKeystore(t *testing.T) {
	n := newNode(t)
	r := n.expect(ExitKMSKey, "kms", "check")
	if !strings.Contains(r.stdout, "does not exist") {
		t.Fatalf("kms check does not say the keystore is missing: %s", r)
	}
	if _, err := os.Stat(filepath.Join(n.dir, "kek")); !os.IsNotExist(err) {
		t.Fatalf("kms check created the keystore (stat: %v)", err)
	}
	n.volume("data1")
	n.expect(ExitOK, "kms", "check")
}

// Where no journal runs, the audit trail of a command is in the state
// directory's audit.log, and stderr said so once.
func TestAuditTrailWithoutJournal(t *testing.T) {
	if journal.Enabled() {
		t.Skip("a journal runs here: the audit records go to it")
	}
	n := newNode(t)
	img := n.image("data1.img", 20)
	first := n.expect(ExitOK, "format", img, "--name", "data1")
	second := n.expect(ExitOK, "header", "backup", img, "--file", filepath.Join(n.dir, "b.hdr"))
	path := filepath.Join(n.dir, "state", "audit.log")
	if !strings.Contains(first.stderr, "audit records go to "+path) || strings.Contains(second.stderr, "audit records") {
		t.Fatalf("stderr does not say once where the audit records go:\n%s\n%s", first, second)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no audit file: %v", err)
	}
	for _, op := range []string{`"op":"format"`, `"op":"header-backup"`} {
		if !strings.Contains(string(data), op) {
			t.Fatalf("the audit file lacks %s:\n%s", op, data)
		}
	}
}
