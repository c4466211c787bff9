// Package version holds the build's version string, set by the Makefile from
// `git describe` through -ldflags.
package version

// Version is the atrest release, or "dev" for builds outside the Makefile.
var Version = "dev"
