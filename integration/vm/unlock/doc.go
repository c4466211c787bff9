// Package unlock holds the real-kernel tests of atrest's unlock path:
// volumes formatted by cryptsetup (the oracle) opened with pkg/dmcrypt,
// data and ext4 file systems surviving close and reopen, and mappings
// behaving the way administrators' tools expect. They run in the VM guest
// (go test ./integration/vm); elsewhere they skip for want of
// device-mapper.
package unlock
