// The module's own tests of the tree as a whole.
package atrest_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// Every package has exactly one package doc comment (test-only packages,
// such as integration tiers, included), and it says what the
// package owns: "Package NAME ..." (for a main package "Command NAME ...",
// "Program NAME ..." or "Package main ..." also do), a sentence or more.
// A package without one, or with two that can drift apart, fails by name.
func TestEveryPackageHasOneDoc(t *testing.T) {
	type pkg struct {
		name string
		docs []string // file: first line of its doc comment
	}
	pkgs := map[string]*pkg{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == "." {
				return nil
			}
			if strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // another module
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments|parser.PackageClauseOnly)
		if err != nil {
			return err
		}
		if strings.HasSuffix(f.Name.Name, "_test") {
			return nil // an external test package belongs to the package it tests
		}
		dir := filepath.Dir(path)
		p := pkgs[dir]
		if p == nil {
			p = &pkg{name: f.Name.Name}
			pkgs[dir] = p
		}
		if f.Doc != nil {
			p.docs = append(p.docs, path+": "+firstLine(f.Doc))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dirs := make([]string, 0, len(pkgs))
	for dir := range pkgs {
		dirs = append(dirs, dir)
	}
	sort.Strings(dirs)
	for _, dir := range dirs {
		p := pkgs[dir]
		switch len(p.docs) {
		case 0:
			t.Errorf("package %s (%s) has no package doc comment saying what it owns", p.name, dir)
			continue
		case 1:
		default:
			t.Errorf("package %s (%s) has %d package doc comments, want one:\n\t%s", p.name, dir, len(p.docs), strings.Join(p.docs, "\n\t"))
			continue
		}
		_, text, _ := strings.Cut(p.docs[0], ": ")
		if !docStartsRight(p.name, filepath.Base(dir), text) {
			t.Errorf("package %s (%s): its doc comment must begin \"Package %s ...\": %s", p.name, dir, p.name, p.docs[0])
		}
	}
	if len(pkgs) < 10 {
		t.Fatalf("found only %d packages; is the test running at the module root?", len(pkgs))
	}
	if _, err := os.Stat("go.mod"); err != nil {
		t.Fatal("not at the module root")
	}
}

func firstLine(g *ast.CommentGroup) string {
	line, _, _ := strings.Cut(g.Text(), "\n")
	return line
}

func docStartsRight(name, dir, text string) bool {
	words := strings.Fields(text)
	if len(words) < 3 {
		return false
	}
	switch {
	case words[0] == "Package" && words[1] == name:
		return true
	case name == "main" && (words[0] == "Command" || words[0] == "Program") && words[1] == dir:
		return true
	}
	return false
}
