package boot

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/atrest/atrest/integration/vm"
)

// CacheEnv overrides the directory the root images and logs are kept in.
const CacheEnv = "ATREST_BOOT_CACHE"

// CacheDir is where root images and run logs are kept: $ATREST_BOOT_CACHE;
// else boot/ inside $ATREST_VM_CACHE when that is set (one variable moves
// both tiers' caches); else atrest/boot beside the VM tier's kernel cache
// (~/.cache/atrest/boot for root on Debian).
func CacheDir() (string, error) {
	if d := os.Getenv(CacheEnv); d != "" {
		return filepath.Abs(d)
	}
	vmCache, err := vm.CacheDir()
	if err != nil {
		return "", err
	}
	if os.Getenv(vm.CacheEnv) != "" {
		return filepath.Join(vmCache, "boot"), nil
	}
	return filepath.Join(filepath.Dir(vmCache), "boot"), nil
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// logDir returns a fresh directory for the logs of the named host test.
func logDir(testName string) (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "logs", unsafeName.ReplaceAllString(testName, "_"))
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("boot: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("boot: %w", err)
	}
	return dir, nil
}
