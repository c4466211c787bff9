//go:build !atrest_failpoints

package volume

// failpoint is a no-op in release builds; see failpoint.go.
func failpoint(string) {}
