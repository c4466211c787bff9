package vault

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// After main moved VAULT_TOKEN out of the environment, every later
// configuration load (atrestd reloads on SIGHUP) still logs in with it,
// and child processes do not inherit it.
func TestEnvTokenSurvivesReload(t *testing.T) {
	if os.Getenv("ATREST_TEST_ENV_CHILD") == "1" {
		if TakeEnvToken() == "" {
			t.Fatal("no warning although VAULT_TOKEN was set")
		}
		if _, ok := os.LookupEnv(EnvToken); ok {
			t.Fatal("VAULT_TOKEN is still in the environment")
		}
		if out, _ := exec.Command("/usr/bin/env").Output(); strings.Contains(string(out), "hvs.child-test-token") {
			t.Fatal("a child process inherited the token")
		}
		for i := range 2 {
			c, err := Config{Address: "https://vault.example:8200"}.WithEnv(os.Getenv)
			if err != nil || c.Auth.Token != "hvs.child-test-token" {
				t.Fatalf("load %d: token %q, %v", i+1, c.Auth.Token, err)
			}
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestEnvTokenSurvivesReload$", "-test.short")
	cmd.Env = append(os.Environ(), "ATREST_TEST_ENV_CHILD=1", "VAULT_TOKEN=hvs.child-test-token")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}
