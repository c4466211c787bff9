// Tests of the Debian package packaging/deb/build.sh makes (`make deb`):
// the version mapping, the example configuration, and the package itself
// as lintian and dpkg-deb see it. integration/boot installs it in a
// booted Debian.
package deb_test

import (
	"bufio"
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/debtest"
	"github.com/atrest/atrest/pkg/config"
)

// Each row is a later build than the one before it, so dpkg must sort
// them in this order: upgrades go forward.
var versions = []struct{ describe, count, want string }{
	{"0123abc", "12", "0~git12.g0123abc"},
	{"0123abc-dirty", "12", "0~git12.g0123abc+dirty"},
	{"89abcde", "13", "0~git13.g89abcde"},
	{"v1.4.0-rc1-0-g0123abc", "20", "1.4.0~rc1"},
	{"v1.4.0-rc1-2-g0123abc", "22", "1.4.0~rc1+git2.g0123abc"},
	{"v1.4.0-0-g0123abc", "25", "1.4.0"},
	{"v1.4.0-0-g0123abc-dirty", "25", "1.4.0+dirty"},
	{"v1.4.0-7-g0123abc", "32", "1.4.0+git7.g0123abc"},
	{"v1.4.0-10-g0123abc", "35", "1.4.0+git10.g0123abc"},
	{"v1.10.0-0-g0123abc", "90", "1.10.0"},
}

func TestVersionFromGitDescribe(t *testing.T) {
	testutil.RequireCommand(t, "bash", "bash")
	dpkg := testutil.RequireCommand(t, "dpkg", "dpkg")
	prev := ""
	for _, v := range versions {
		out, err := exec.Command("./version.sh", v.describe, v.count).CombinedOutput()
		got := strings.TrimSpace(string(out))
		if err != nil || got != v.want {
			t.Errorf("version.sh %s %s = %q (%v), want %q", v.describe, v.count, got, err, v.want)
			continue
		}
		if prev != "" {
			if out, err := exec.Command(dpkg, "--compare-versions", prev, "lt", got).CombinedOutput(); err != nil || len(out) > 0 {
				t.Errorf("dpkg does not sort %s before %s (%v %s): an upgrade would go backwards", prev, got, err, out)
			}
		}
		prev = got
	}
	if out, err := exec.Command("./version.sh", "release-1", "3").CombinedOutput(); err == nil {
		t.Errorf("version.sh maps the tag release-1 to %q; want a refusal", out)
	}
}

// The shipped /etc/atrest/atrest.yaml loads as the defaults, and with
// every setting line uncommented it is still a valid configuration: an
// administrator who removes a "#" gets a working key, not an error.
func TestExampleConfig(t *testing.T) {
	data, err := os.ReadFile("atrest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "atrest.yaml")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(p)
	if err != nil {
		t.Fatalf("the packaged example does not load: %v", err)
	}
	if c.KMS != config.BackendLocal || c.Local.Keystore != "/var/lib/atrest/kek" {
		t.Errorf("the packaged example is not the defaults: kms %q keystore %q", c.KMS, c.Local.Keystore)
	}
	// Settings are "#" followed by a key or by two spaces; prose is "# ".
	setting := regexp.MustCompile(`^#([a-z_]+:|  )`)
	var on bytes.Buffer
	n := 0
	for _, l := range strings.Split(string(data), "\n") {
		if setting.MatchString(l) {
			l = l[1:]
			n++
		}
		on.WriteString(l + "\n")
	}
	c, err = config.Parse(on.Bytes(), "atrest.yaml, uncommented")
	if err != nil {
		t.Fatalf("the example with its %d setting lines uncommented: %v\n%s", n, err, on.Bytes())
	}
	if c.KMS != config.BackendVaultTransit || c.Vault.Transit.Key != "atrest-node7" || len(c.Volumes) != 1 {
		t.Errorf("uncommented example: kms %q transit key %q volumes %d", c.KMS, c.Vault.Transit.Key, len(c.Volumes))
	}
}

// The paths and modes the package must ship (dpkg-deb -c), every one
// owned by root.
var wantFiles = map[string]string{
	"usr/sbin/atrest":                                 "-rwxr-xr-x",
	"usr/sbin/atrestd":                                "-rwxr-xr-x",
	"usr/lib/systemd/system/atrestd.service":          "-rw-r--r--",
	"usr/lib/systemd/system/atrest-early.service":     "-rw-r--r--",
	"usr/share/man/man8/atrest.8.gz":                  "-rw-r--r--",
	"usr/share/man/man8/atrestd.8.gz":                 "-rw-r--r--",
	"usr/share/bash-completion/completions/atrest":    "-rw-r--r--",
	"usr/share/zsh/vendor-completions/_atrest":        "-rw-r--r--",
	"usr/share/fish/vendor_completions.d/atrest.fish": "-rw-r--r--",
	"usr/share/doc/atrest/copyright":                  "-rw-r--r--",
	"usr/share/doc/atrest/changelog.gz":               "-rw-r--r--",
	"usr/share/lintian/overrides/atrest":              "-rw-r--r--",
	"etc/atrest":                                      "drwx------",
	"etc/atrest/atrest.yaml":                          "-rw-------",
	"var/lib/atrest":                                  "drwx------",
}

// The architectures `make deb` builds (DEB_ARCH), with their ELF machine.
var arches = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// TestPackage builds the package as `make deb` does, for amd64 and
// cross-built for arm64, and checks it the way Debian does (lintian,
// every tag at every level, the overrides in
// packaging/deb/lintian-overrides aside) and the way an administrator
// would see it: paths, modes, the conffile, the unit pointing at
// /usr/sbin/atrestd, the version atrest prints, the programs built for
// the package's architecture.
func TestPackage(t *testing.T) {
	for arch, machine := range arches {
		t.Run(arch, func(t *testing.T) { checkPackage(t, arch, machine) })
	}
}

func checkPackage(t *testing.T, arch string, machine elf.Machine) {
	lintian := testutil.RequireCommand(t, "lintian", "lintian")
	deb := debtest.Build(t, "DEB_ARCH="+arch)

	out, err := exec.Command(lintian, "--pedantic", "--info", "--display-experimental",
		"--fail-on", "error,warning,info,pedantic,experimental", deb).CombinedOutput()
	var tags []string
	for _, l := range strings.Split(string(out), "\n") {
		if len(l) > 2 && l[1] == ':' && strings.Contains("EWIPX", l[:1]) {
			tags = append(tags, l)
		}
	}
	if err != nil || len(tags) > 0 {
		t.Errorf("lintian %s: %v\n%s", filepath.Base(deb), err, out)
	}

	out, err = exec.Command("dpkg-deb", "-c", deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		p := strings.TrimSuffix(strings.TrimPrefix(f[5], "./"), "/")
		got[p] = f[0]
		if f[1] != "root/root" {
			t.Errorf("%s is owned by %s, want root/root", p, f[1])
		}
		if strings.HasPrefix(p, "usr/local") {
			t.Errorf("the package ships %s: /usr/local belongs to the administrator", p)
		}
	}
	for p, mode := range wantFiles {
		if got[p] != mode {
			t.Errorf("%s: mode %q, want %q", p, got[p], mode)
		}
	}

	field := func(name string) string {
		out, err := exec.Command("dpkg-deb", "-f", deb, name).Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	version := field("Version")
	if want, _ := exec.Command("./version.sh").Output(); version != strings.TrimSpace(string(want)) || filepath.Base(deb) != "atrest_"+version+"_"+arch+".deb" {
		t.Errorf("package version %q (%s), want version.sh's %q", version, filepath.Base(deb), want)
	}
	if a := field("Architecture"); a != arch {
		t.Errorf("Architecture %q, want %s", a, arch)
	}
	conffiles, err := exec.Command("dpkg-deb", "--info", deb, "conffiles").Output()
	if err != nil || string(conffiles) != "/etc/atrest/atrest.yaml\n" {
		t.Errorf("conffiles %q (%v), want /etc/atrest/atrest.yaml only", conffiles, err)
	}

	dir := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v %s", err, out)
	}
	for _, u := range []struct{ name, exec string }{
		{"atrestd.service", "/usr/sbin/atrestd"},
		{"atrest-early.service", "/usr/sbin/atrestd --early"},
	} {
		unit, err := os.ReadFile(filepath.Join(dir, "usr/lib/systemd/system", u.name))
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^ExecStart=` + regexp.QuoteMeta(u.exec) + `$`).Match(unit) {
			t.Errorf("the packaged %s does not run %s:\n%s", u.name, u.exec, unit)
		}
		src, err := os.ReadFile("../../systemd/" + u.name)
		if err != nil {
			t.Fatal(err)
		}
		if string(bytes.ReplaceAll(unit, []byte("/usr/sbin/atrestd"), []byte("/usr/local/sbin/atrestd"))) != string(src) {
			t.Errorf("the packaged unit differs from systemd/%s by more than the ExecStart path", u.name)
		}
	}
	for _, prog := range []string{"atrest", "atrestd"} {
		bin := filepath.Join(dir, "usr/sbin", prog)
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		if f.Machine != machine {
			t.Errorf("%s is built for %s, want %s (%s)", prog, f.Machine, machine, arch)
		}
		f.Close()
		if arch != runtimeArch() {
			continue
		}
		out, err := exec.Command(bin, "--version").CombinedOutput()
		if err != nil || !strings.Contains(string(out), version) {
			t.Errorf("%s --version: %q (%v), want the package version %s", prog, out, err, version)
		}
	}
	if _, err := config.Load(filepath.Join(dir, "etc/atrest/atrest.yaml")); err != nil {
		t.Errorf("the installed conffile does not load: %v", err)
	}
}

// runtimeArch is the Debian name of the machine the test runs on.
func runtimeArch() string {
	out, _ := exec.Command("dpkg", "--print-architecture").Output()
	return strings.TrimSpace(string(out))
}
