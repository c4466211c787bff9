package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/version"
	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/volume"
)

var update = flag.Bool("update", false, "rewrite the golden files of the -o json documents")

// Every -o json document, as a script sees it, against its golden file in
// testdata/json (go test ./internal/cli -run TestJSONGolden -update
// rewrites them; review the diff: a removed or changed field needs a new
// jsonSchema). Values that differ between runs (paths, UUIDs, keys) are
// replaced by placeholders.
func TestJSONGolden(t *testing.T) {
	n := newNode(t)
	img := n.image("data1.img", 20)
	doc := func(name string, code int, stdin string, args ...string) string {
		t.Helper()
		r := n.run(stdin, append([]string{"-o", "json"}, args...)...)
		if r.code != code {
			t.Fatalf("%s: want exit %d: %s", name, code, r)
		}
		golden(t, name, n.normalize(r.stdout))
		return r.stdout
	}
	doc("kms-check-no-keystore", ExitKMSKey, "", "kms", "check")
	var f struct {
		Recovery struct{ Key string }
	}
	if err := json.Unmarshal([]byte(doc("format", ExitOK, "", "format", img, "--name", "data1", "--recovery", "print")), &f); err != nil {
		t.Fatal(err)
	}
	doc("kms-check", ExitOK, "", "kms", "check")
	doc("status", ExitOK, "", "status", img)
	doc("header-backup", ExitOK, "", "header", "backup", img)
	doc("header-check", ExitOK, "", "header", "check", img)
	doc("header-restore", ExitOK, "", "header", "restore", img)
	doc("rekey", ExitOK, "", "rekey", img)
	doc("rewrap", ExitOK, "", "rewrap", "--force", img)
	var rot struct {
		Recovery struct{ Key string }
	}
	if err := json.Unmarshal([]byte(doc("recovery-rotate", ExitOK, "", "recovery", "rotate", img, "--mode", "print")), &rot); err != nil {
		t.Fatal(err)
	}
	doc("recovery-reseal", ExitOK, rot.Recovery.Key+"\n", "recovery", "reseal", img)
	doc("kms-rotate", ExitOK, "", "kms", "rotate")
	doc("kms-retire", ExitOK, "", "kms", "retire", "--min-version", "1")
	doc("error", ExitNotFound, "", "status", "no-such-volume")
	doc("version", ExitOK, "", "version")
	doc("erase", ExitOK, "", "erase", img, "--yes", "--confirm", "data1")
	plain := n.cryptsetupImage("plain.img", "passphrase")
	doc("adopt", ExitOK, "passphrase\n", "adopt", plain, "--name", "legacy", "--recovery", "none")

	// The documents of mappings, whose commands need device-mapper: the
	// same types the commands print, for a success and a failure.
	mapped := func(name string, v any) {
		t.Helper()
		var b bytes.Buffer
		(&env{stdout: &b}).printJSON(v)
		golden(t, name, n.normalize(b.String()))
	}
	busy := fmt.Errorf("%w: /dev/mapper/data2 is in use (mounted?)", dmcrypt.ErrBusy)
	const u = "0b4e1d9c-6a43-4e37-9c1c-2f1d4b6a9e10"
	mapped("open", volumesDoc[openResult]{v1, []openResult{
		{Name: "data1", UUID: u, Device: "/dev/sdb", Mapper: "/dev/mapper/data1", By: []string{"vault-transit"},
			Resealed: []volume.TPMKeyslot{{Keyslot: 2, Token: 1, PCRs: []int{7}, Bank: "sha256", PrimaryAlg: "ecc"}}},
		{Name: "data2", UUID: u, Device: "/dev/sdc", Mapper: "/dev/mapper/data2", By: []string{}, Resealed: []volume.TPMKeyslot{}, failed: failure(volume.ErrNotManaged)},
	}})
	mapped("close", volumesDoc[closeResult]{v1, []closeResult{
		{Name: "data1", UUID: u, Closed: true},
		{Name: "data2", UUID: u, failed: failure(busy)},
	}})
	mapped("recovery-unlock", unlockDoc{v1, "data1", u, "/dev/sdb", "/dev/mapper/data1", false})
}

// Every document carries the schema version docs/cli.md names.
func TestJSONSchemaDocumented(t *testing.T) {
	text, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(text), "`\"schema\": 1`") {
		t.Fatalf("docs/cli.md does not document schema version %d", jsonSchema)
	}
	files, err := filepath.Glob("testdata/json/*.json")
	if err != nil || len(files) < 20 {
		t.Fatalf("golden files: %v %v", files, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct{ Schema int }
		if err := json.Unmarshal(data, &d); err != nil || d.Schema != jsonSchema {
			t.Errorf("%s: schema %d (%v), want %d", f, d.Schema, err, jsonSchema)
		}
	}
}

var (
	uuidRE   = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	recKeyRE = regexp.MustCompile(`[cbdefghijklnrtuv]{8}(-[cbdefghijklnrtuv]{8}){7}`)
	kekRE    = regexp.MustCompile(`\b[0-9a-f]{32}\b`)
)

// normalize replaces what differs between runs with placeholders.
func (n *node) normalize(s string) string {
	s = strings.ReplaceAll(s, n.dir, "$DIR")
	s = uuidRE.ReplaceAllString(s, "<uuid>")
	s = recKeyRE.ReplaceAllString(s, "<recovery-key>")
	s = kekRE.ReplaceAllString(s, "<kek>")
	s = strings.ReplaceAll(s, `"`+version.Version+`"`, `"<version>"`)
	return strings.ReplaceAll(s, `"`+runtime.Version()+`"`, `"<go>"`)
}

// golden compares got with testdata/json/name.json, or writes it with
// -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "json", name+".json")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v (run with -update to create it)", name, err)
	}
	if got != string(want) {
		t.Errorf("the %s document changed (review, then -update):\n--- %s\n%s\n--- got\n%s", name, path, want, got)
	}
}
