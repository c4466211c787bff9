// Package selfcheck has tests with every outcome the VM harness must judge
// (pass, skip, fail, subtests). harness_test.go runs it on the host with
// -test.v=test2json to check that only passes count as passes.
package selfcheck

import "testing"

func TestPasses(t *testing.T) {
	t.Run("child", func(t *testing.T) {})
}

func TestSkips(t *testing.T) { t.Skip("no device-mapper here") }

func TestFails(t *testing.T) { t.Fatal("broken") }

func TestChildSkips(t *testing.T) {
	t.Run("ok", func(t *testing.T) {})
	t.Run("skipped", func(t *testing.T) { t.Skip("skipped child") })
}
