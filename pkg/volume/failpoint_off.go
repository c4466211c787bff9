//go:build !atrest_failpoints

package volume

// failpoint marks the points where a crash matters (see failpoint.go). It
// does nothing in release builds; the package's tests replace it to
// interrupt a use case there.
var failpoint = func(string) {}
