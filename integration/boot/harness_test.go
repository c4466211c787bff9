package boot

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/integration/vm"
	"github.com/atrest/atrest/internal/testutil"
)

func TestParseResultsKeepsOutputExact(t *testing.T) {
	raw := "\x1b[2J\x1b[01;01HATREST-BOOT-INITRAMFS 6.1.0-48-amd64\n" +
		"ATREST-BOOT-SWITCHROOT\n" +
		"ATREST-BOOT-REACHED multi-user.target\nATREST-BOOT-STATE degraded 31.25\n" +
		"ATREST-BOOT-BEGIN first\nline one\nno newline at the end\nATREST-BOOT-END first 0 30\n" +
		"ATREST-BOOT-BEGIN second\n{\"MESSAGE\":\"a\"}\n{\"MESSAGE\":\"b\"}\n\nATREST-BOOT-END second 3 32\n" +
		"ATREST-BOOT-BEGIN third\npartial\n"
	r := parseResults([]byte(raw))
	if r.Kernel != "6.1.0-48-amd64" || !r.SwitchedRoot || !r.Reached || r.After != "multi-user.target" || r.Done ||
		r.SystemState != "degraded" || r.Finished != 31250*time.Millisecond {
		t.Fatalf("result %+v", r)
	}
	if c := r.Check("first"); c == nil || !c.Ended || c.ExitCode != 0 || string(c.Output) != "line one\nno newline at the end" {
		t.Fatalf("first: %+v", c)
	}
	if c := r.Check("second"); c == nil || c.ExitCode != 3 || r.Output("second") != "{\"MESSAGE\":\"a\"}\n{\"MESSAGE\":\"b\"}\n" {
		t.Fatalf("second: %+v", c)
	}
	r.Checks[1].Name = "journal:x.service"
	entries, err := r.Journal("x.service")
	if err != nil || len(entries) != 2 || entries[1]["MESSAGE"] != "b" {
		t.Fatalf("journal entries %v, %v", entries, err)
	}
	if c := r.Check("third"); c == nil || c.Ended || string(c.Output) != "partial\n" {
		t.Fatalf("third: %+v", c)
	}
}

// Every way a boot can go wrong fails with the console log named; a
// finished Collect check with a non-zero status does not.
func TestVerdicts(t *testing.T) {
	console := filepath.Join(t.TempDir(), "boot1-console.log")
	if err := os.WriteFile(console, []byte("[  OK  ] Reached target multi-user.target\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := Spec{After: "multi-user.target", Checks: []Check{Script("a", "true"), Collect("status:x", "systemctl status x")}}
	good := "ATREST-BOOT-INITRAMFS k\nATREST-BOOT-SWITCHROOT\nATREST-BOOT-REACHED multi-user.target\nATREST-BOOT-STATE degraded 31.25\n" +
		"ATREST-BOOT-BEGIN a\n\nATREST-BOOT-END a 0 0\nATREST-BOOT-BEGIN status:x\ninactive\n\nATREST-BOOT-END status:x 3 9\nATREST-BOOT-DONE\n"
	parse := func(s string) *Result {
		r := parseResults([]byte(s))
		r.Boot, r.Console, r.ResultsLog = 1, console, "RESULTS"
		return r
	}
	if err := verdict(parse(good), spec, nil); err != nil {
		t.Fatalf("a good boot failed: %v", err)
	}
	for name, c := range map[string]struct {
		results string
		bootErr error
		want    string
	}{
		"no initramfs":   {"", errors.New("qemu: boom"), "never ran the initramfs"},
		"root not found": {"ATREST-BOOT-INITRAMFS k\nATREST-BOOT-INITRAMFS-FAILED mount /dev/vda\n", nil, "mount /dev/vda"},
		"emergency": {"ATREST-BOOT-INITRAMFS k\nATREST-BOOT-SWITCHROOT\nATREST-BOOT-EMERGENCY emergency\nmnt-x.mount loaded failed failed\nATREST-BOOT-EMERGENCY-END\n",
			nil, "mnt-x.mount loaded failed"},
		"target never reached": {"ATREST-BOOT-INITRAMFS k\nATREST-BOOT-SWITCHROOT\n", vm.ErrTimeout, "never reached multi-user.target"},
		"check failed":         {strings.Replace(good, "END a 0 0", "END a 1 0", 1), nil, "check a exited with status 1"},
		"check hung":           {strings.SplitAfter(good, "BEGIN a\n")[0], vm.ErrTimeout, "check a did not finish"},
		"check missing":        {strings.Replace(good, "BEGIN a\n\nATREST-BOOT-END a 0 0\n", "", 1), nil, "check a never started"},
		"no clean power-off":   {good, vm.ErrTimeout, "did not power off by itself"},
	} {
		t.Run(name, func(t *testing.T) {
			err := verdict(parse(c.results), spec, c.bootErr)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), console) {
				t.Fatalf("verdict %v; want %q and the console log %s", err, c.want, console)
			}
			if errors.Is(c.bootErr, vm.ErrTimeout) != errors.Is(err, vm.ErrTimeout) {
				t.Fatalf("verdict %v does not keep the timeout visible", err)
			}
		})
	}
}

// The debugfs editor writes, replaces, links and removes files in an
// ext4 image with merged /usr, and leaves the file system clean.
func TestRootEditRoundTrip(t *testing.T) {
	for _, c := range []string{"mke2fs", "debugfs", "e2fsck"} {
		testutil.RequireCommand(t, c, "e2fsprogs")
	}
	ctx := context.Background()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for _, d := range []string{"usr/lib/systemd/system", "usr/bin", "etc"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("usr/lib", filepath.Join(tree, "lib")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "etc/fstab"), []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(dir, "root.img")
	if err := makeExt4(ctx, image, tree, 16); err != nil {
		t.Fatal(err)
	}
	host := filepath.Join(dir, "prog")
	if err := os.WriteFile(host, []byte("#!/bin/sh\necho hi\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fstab := filepath.Join(dir, "fstab")
	if err := os.WriteFile(fstab, []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var e rootEdit
	for _, op := range []editOp{
		{guest: "/usr/local/lib/atrest/x/prog", host: host, perm: 0o755},
		{guest: "/etc/fstab", host: fstab, perm: 0o644},
		{guest: "/lib/systemd/system/a b.service", host: fstab, perm: 0o644},
		{guest: "/etc/systemd/system/multi-user.target.wants/a.service", link: "/lib/systemd/system/a.service"},
		{guest: "/usr/local/lib/atrest/x/prog", host: host, perm: 0o700},
		{guest: "/etc/gone", host: fstab, perm: 0o644},
		{guest: "/etc/gone", rm: true},
	} {
		if err := e.add(op); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.apply(ctx, image); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("e2fsck", "-fn", image).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck after the edit: %v\n%s", err, out)
	}
	for guest, want := range map[string]string{
		"/etc/fstab": "new\n", "/usr/local/lib/atrest/x/prog": "#!/bin/sh\necho hi\n",
		"/usr/lib/systemd/system/a b.service": "new\n",
	} {
		got, err := readGuestFile(ctx, image, guest)
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", guest, got, err, want)
		}
	}
	types, err := statPaths(ctx, image, map[string]bool{"/etc/gone": true, "/etc/systemd/system/multi-user.target.wants/a.service": true})
	if err != nil {
		t.Fatal(err)
	}
	if types["/etc/gone"] != "" || types["/etc/systemd/system/multi-user.target.wants/a.service"] != "symlink" {
		t.Errorf("types %v", types)
	}
	out, _ := debugfs(ctx, image, false, "stat /usr/local/lib/atrest/x/prog\n")
	if !strings.Contains(string(out), "Mode:  0700") || !strings.Contains(string(out), "User:     0") {
		t.Errorf("prog is not root's with mode 0700:\n%s", out)
	}
	if _, err := readGuestFile(ctx, image, "/etc/gone"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a removed file reads back: %v", err)
	}
	if err := e.add(editOp{guest: "etc/x", host: host}); err == nil {
		t.Error("a relative guest path was accepted")
	}
}
