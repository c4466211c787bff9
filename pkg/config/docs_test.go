package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// yamlBlock is a fenced ```yaml block of a Markdown file.
var yamlBlock = regexp.MustCompile("(?ms)^```yaml\n(.*?)^```")

// Every configuration example in the documentation (each ```yaml block of
// docs/*.md and README.md) is a file this loader accepts: a field the docs
// spell differently from the parser fails here, not on a node.
func TestDocumentedConfigurationsLoad(t *testing.T) {
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../../README.md")
	t.Setenv("VAULT_ADDR", "")
	n := 0
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range yamlBlock.FindAllSubmatchIndex(text, -1) {
			n++
			line := 1 + strings.Count(string(text[:m[0]]), "\n")
			name := filepath.Base(f) + ":" + strconv.Itoa(line)
			t.Run(name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "atrest.yaml")
				if err := os.WriteFile(path, text[m[2]:m[3]], 0o600); err != nil {
					t.Fatal(err)
				}
				if _, err := Load(path); err != nil {
					t.Fatalf("the example at %s does not load: %v", name, err)
				}
			})
		}
	}
	if n < 2 {
		t.Fatalf("found %d configuration examples; docs/config.md and docs/vault.md have one each", n)
	}
}

// The settings table of docs/vault.md names fields the parser knows, under
// vault: (it once said ca_cert and auth.approle.role_id).
func TestVaultDocFieldsExist(t *testing.T) {
	text, err := os.ReadFile("../../docs/vault.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(text), "| setting ")
	if !ok {
		t.Fatal("docs/vault.md has no settings table")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	cell := regexp.MustCompile("`([a-z_.]+)`")
	n := 0
	for _, row := range strings.Split(table, "\n")[2:] {
		first := strings.Split(row, "|")[1]
		for _, m := range cell.FindAllStringSubmatch(first, -1) {
			n++
			if !hasField(reflect.TypeOf(Vault{}), strings.Split(m[1], ".")) {
				t.Errorf("docs/vault.md names vault.%s, which the configuration file does not have", m[1])
			}
		}
	}
	if n < 10 {
		t.Fatalf("read only %d settings from the table", n)
	}
}

// hasField reports whether the yaml field path exists in struct type typ.
func hasField(typ reflect.Type, path []string) bool {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if len(path) == 0 {
		return true
	}
	if typ.Kind() != reflect.Struct {
		return false
	}
	for i := range typ.NumField() {
		f := typ.Field(i)
		if strings.Split(f.Tag.Get("yaml"), ",")[0] == path[0] {
			return hasField(f.Type, path[1:])
		}
	}
	return false
}
